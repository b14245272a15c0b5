"""Killing a training run mid-way, for the resume tests."""

import pytest

from cen_jax import run
from cen_jax.training import loop


def train_killed_at_call(monkeypatch, config, workdir, call: int = 3) -> None:
  """Runs ``train_and_evaluate`` and kills it at the ``call``-th train step.

  The default, the third call, comes after the checkpoint of step 2 in runs
  that checkpoint every 2 steps. ``loop.jit_train_step`` is restored after.
  """
  real_jit = loop.jit_train_step

  def crashing_jit(trainer, mesh):
    fn, calls = real_jit(trainer, mesh), []

    def step(*args):
      calls.append(1)
      if len(calls) == call:
        raise KeyboardInterrupt('killed')
      return fn(*args)

    return step

  monkeypatch.setattr(loop, 'jit_train_step', crashing_jit)
  with pytest.raises(KeyboardInterrupt):
    run.train_and_evaluate(config, str(workdir))
  monkeypatch.setattr(loop, 'jit_train_step', real_jit)
