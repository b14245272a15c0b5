"""When to log, evaluate and checkpoint: one rule, tested once.

``step`` always counts completed optimiser updates: 0 before training, ``n``
right after the ``n``-th update, ``total_steps`` at the end. Every periodic
action of the trainer asks :func:`itstime` (after big_vision's
``utils.itstime``), each with its own period; :class:`Cadence` holds the
three periods by name so that a checkpoint can never be keyed on the eval
period, as ``vit_jax`` did by mistake.
"""

import dataclasses


def itstime(step: int, every_n_steps: int, total_steps: int, *,
            first: bool = False, last: bool = True) -> bool:
  """Whether a periodic action runs after ``step`` completed updates.

  Args:
    step: completed updates, in ``[0, total_steps]``.
    every_n_steps: period; ``<= 0`` disables the periodic firing (the final
      step still fires when ``last``).
    total_steps: length of the run.
    first: also fire at step 0 (before any update), e.g. to evaluate the
      initial weights.
    last: also fire at ``total_steps`` even when it is not a multiple of the
      period, so that the run always ends with the action.

  Returns:
    ``True`` when the action is due.
  """
  if step == 0:
    return first
  periodic = every_n_steps > 0 and step % every_n_steps == 0
  return periodic or (last and step == total_steps)


def steps_per_epoch(num_train_examples: int, global_batch_size: int) -> int:
  """Updates per epoch with ``drop_last=True``, as the official loader.

  Args:
    num_train_examples: training-set size (795 for NYUDv2).
    global_batch_size: examples per update over all devices (6 officially).

  Returns:
    ``num_train_examples // global_batch_size`` (132 for NYUDv2).

  Raises:
    ValueError: if the batch is larger than the dataset or not positive.
  """
  if global_batch_size <= 0:
    raise ValueError(f'global_batch_size must be > 0: {global_batch_size}.')
  steps = num_train_examples // global_batch_size
  if steps == 0:
    raise ValueError(f'global_batch_size {global_batch_size} exceeds the '
                     f'{num_train_examples} training examples.')
  return steps


def epochs_to_steps(epochs: float, epoch_steps: int) -> int:
  """Converts a (possibly fractional) number of epochs to updates.

  Args:
    epochs: e.g. 5 for the official validation period.
    epoch_steps: from :func:`steps_per_epoch`.

  Returns:
    ``round(epochs * epoch_steps)``; 0 stays 0 (a disabled period).
  """
  return int(round(epochs * epoch_steps))


@dataclasses.dataclass(frozen=True)
class Cadence:
  """The trainer's three periods, in updates, and the run length.

  Attributes:
    total_steps: length of the run.
    log_every: training-metric logging period (``<= 0``: final step only).
    eval_every: validation period.
    checkpoint_every: period of the rolling ``latest`` checkpoint.
  """
  total_steps: int
  log_every: int
  eval_every: int
  checkpoint_every: int

  def log(self, step: int) -> bool:
    """Whether to write training metrics after ``step`` updates."""
    return itstime(step, self.log_every, self.total_steps)

  def eval(self, step: int) -> bool:
    """Whether to run validation after ``step`` updates."""
    return itstime(step, self.eval_every, self.total_steps)

  def checkpoint(self, step: int) -> bool:
    """Whether to save the ``latest`` checkpoint after ``step`` updates."""
    return itstime(step, self.checkpoint_every, self.total_steps)
