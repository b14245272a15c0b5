"""The narrow interface between the training loop and a task.

A *task* (segmentation, translation, ...) owns everything that differs
between applications: its model(s), optimiser(s), state, train and eval
steps, what evaluation accumulates and how it becomes numbers, the metric
that picks the best checkpoint, and what its user-facing modes write. The
loop (``cen_jax.training.loop``) owns what is common: the mesh and the
shardings, resume, the cadence, the clu writers and progress, the
non-finite stop and the checkpoints. Tasks are built from the config by
their own package under ``cen_jax/tasks/``; the loop never sees a config.

Contracts, for every task:

* **Variables** are the model weights a trained run is used with
  (segmentation: ``{'params', 'batch_stats'}``; a GAN would hold
  ``{'generator': {...}, 'discriminator': {...}}``). **State** is a dict
  holding ``'step'`` (int32 scalar, completed updates) and the variables
  under the same keys, plus whatever training adds (optimiser states), so
  that evaluation can restore the variables alone from a checkpoint.
* **Steps are pure.** ``train_step(state, batch, rng) -> (state, metrics)``
  with ``metrics`` a flat dict of scalars that includes ``'loss'`` (the
  loop averages them over the logging window with ``clu.metrics.Average``
  and stops on a non-finite loss); ``eval_step(variables, batch) -> sums``,
  a pytree of per-batch sums (counts, confusion matrices) that the loop
  adds up over the whole eval split, in int64/float64 on the host. A step
  may instead return ``{'sums': sums, 'rows': rows, 'valid': (B,)}``, with
  ``rows`` a pytree of per-example arrays (features for FID/KID): the loop
  then also concatenates the rows of the valid examples in split order and
  hands ``{'sums': totals, 'rows': rows}`` to ``summarize``. A task may
  have ``eval_constants`` (a pytree, or None): arrays the eval step needs
  besides the variables (a metric network's weights), which the loop passes
  as its third argument, ``eval_step(variables, batch, constants)``.
* **Compiler options.** A task (for its eval step) and a trainer (for its
  train step) may have ``compiler_options``, a dict of XLA options or None,
  which the loop passes to ``jax.jit`` (e.g. which library runs the CPU's
  convolutions, ``cen_jax.core.kernels.compiler_options``).
* **Batches** are dicts of NumPy arrays whose leading axis is the example
  axis; the loop shards them over the ``'data'`` mesh axis.
"""

import dataclasses
import pathlib
from typing import Any, Iterator, Protocol

import jax
import numpy as np

State = dict[str, Any]
Variables = Any
Batch = dict[str, np.ndarray]
Metrics = dict[str, jax.Array]
Summary = dict[str, float]
BEST_MODES = ('max', 'min')


@dataclasses.dataclass(frozen=True)
class BestMetric:
  """Which evaluation scalar picks the ``best`` checkpoint.

  Attributes:
    key: the summary key, e.g. ``'eval/ensemble/miou'``.
    mode: ``'max'`` (mIoU) or ``'min'`` (FID, a loss).
    stored_as: the name the checkpoint stores the value under.
  """
  key: str
  mode: str = 'max'
  stored_as: str = 'metric'

  def __post_init__(self):
    if self.mode not in BEST_MODES:
      raise ValueError(f'best mode {self.mode!r}: choose one of {BEST_MODES}')


class Loader(Protocol):
  """A resumable batch stream (a ``grain.DataLoader``)."""

  def __iter__(self) -> Iterator[Batch]:
    ...


class Trainer(Protocol):
  """The training side of a task; building it may read the training split.

  Attributes:
    steps_per_epoch: updates per pass over the training split.
    total_steps: length of the run in updates.
  """
  steps_per_epoch: int
  total_steps: int

  def create_state(self, variables: Variables) -> State:
    """Pure: the state of step 0 around ``variables`` (optimiser init)."""

  def train_step(self, state: State, batch: Batch,
                 rng: jax.Array) -> tuple[State, Metrics]:
    """Pure: one update; ``rng`` is the run's key (fold in the step)."""

  def loader(self, *, batch_size: int, seed: int, shard_index: int,
             shard_count: int) -> Loader:
    """This process's endless, shuffled training stream."""


class Task(Protocol):
  """One application of CEN, built from its config.

  Attributes:
    name: the key of the task in ``cen_jax.tasks.TASKS``.
    best: the metric that selects the best checkpoint.
    batch_size: global training batch over all devices.
    eval_batch_size: global eval batch; the loop rounds it up to fill every
      device.
  """
  name: str
  best: BestMetric
  batch_size: int
  eval_batch_size: int

  def init_variables(self, rng: jax.Array) -> Variables:
    """Pure: randomly initialised variables (shapes give the templates)."""

  def start_variables(self, rng: jax.Array) -> Variables:
    """The variables a new run starts from (random or pretrained)."""

  def trainer(self) -> Trainer:
    """The training side (reads the training split)."""

  def eval_loader(self, *, batch_size: int, shard_index: int,
                  shard_count: int) -> Loader:
    """Every eval example once, in full batches (padding marked invalid)."""

  def eval_step(self, variables: Variables, batch: Batch) -> Any:
    """Pure: the per-batch sums evaluation accumulates."""

  def summarize(self, totals: Any) -> Summary:
    """Scalars from the sums over the whole eval split."""

  def format_summary(self, summary: Summary) -> str:
    """A short, human-readable line or table for the console."""

  def eval_images(self, variables: Variables) -> dict[str, np.ndarray]:
    """``(N, H, W, 3)`` uint8 images logged at every evaluation."""

  def write_report(self, directory: pathlib.Path, totals: Any,
                   summary: Summary) -> str:
    """Writes the files of a stand-alone evaluation (``--mode=eval``) under
    ``directory``; returns a readable summary for the console."""
