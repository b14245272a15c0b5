"""Tests for cen_jax.cadence: exact lists of the steps that fire."""

import pytest

from cen_jax.training import cadence


def _fires(total_steps, every, **kwargs):
  return [s for s in range(total_steps + 1)
          if cadence.itstime(s, every, total_steps, **kwargs)]


def test_every_n_steps_and_the_final_step():
  assert _fires(20, 6) == [6, 12, 18, 20]


def test_final_step_not_repeated_when_it_is_a_multiple():
  assert _fires(20, 5) == [5, 10, 15, 20]


def test_without_last_only_multiples_fire():
  assert _fires(20, 6, last=False) == [6, 12, 18]


def test_step_zero_only_with_first():
  assert _fires(10, 5, first=True) == [0, 5, 10]
  assert _fires(10, 1) == list(range(1, 11))


@pytest.mark.parametrize('every', [0, -1])
def test_disabled_period_fires_only_at_the_end(every):
  assert _fires(10, every) == [10]
  assert not _fires(10, every, last=False)


def test_period_longer_than_the_run():
  assert _fires(7, 100) == [7]


def test_cadence_keeps_each_action_on_its_own_period():
  # vit_jax saved checkpoints on `step % eval_every`: the lists must differ.
  c = cadence.Cadence(total_steps=20, log_every=3, eval_every=5,
                      checkpoint_every=7)
  steps = range(21)
  assert [s for s in steps if c.log(s)] == [3, 6, 9, 12, 15, 18, 20]
  assert [s for s in steps if c.eval(s)] == [5, 10, 15, 20]
  assert [s for s in steps if c.checkpoint(s)] == [7, 14, 20]


def test_steps_per_epoch_drops_the_last_partial_batch():
  assert cadence.steps_per_epoch(795, 6) == 132  # NYUDv2, official batch
  assert cadence.steps_per_epoch(12, 4) == 3
  assert cadence.steps_per_epoch(13, 4) == 3


@pytest.mark.parametrize('n,b', [(5, 6), (5, 0)])
def test_steps_per_epoch_rejects_impossible_batches(n, b):
  with pytest.raises(ValueError):
    cadence.steps_per_epoch(n, b)


def test_epochs_to_steps():
  assert cadence.epochs_to_steps(5, 132) == 660   # official eval period
  assert cadence.epochs_to_steps(300, 132) == 39600
  assert cadence.epochs_to_steps(2.5, 132) == 330
  assert cadence.epochs_to_steps(0, 132) == 0
