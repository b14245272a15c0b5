"""Task-independent optimiser pieces: schedules, stage resets, PyTorch SGD.

Tasks compose these into their recipes (segmentation: two parameter groups
of SGD with stage-wise rates; ``cen_jax.core.sparsity`` adds the L1 term).
"""

from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import optax


class ResetState(NamedTuple):
  count: jnp.ndarray
  inner: Any


def reset_at(steps: Sequence[int],
             inner: optax.GradientTransformation
             ) -> optax.GradientTransformation:
  """Re-initialises ``inner``'s state at the given update counts.

  The official recipe re-creates its optimisers at every stage, dropping the
  momentum buffers; this does the same inside a pure, resumable state.
  """
  steps = tuple(int(s) for s in steps)

  def init_fn(params):
    return ResetState(jnp.zeros((), jnp.int32), inner.init(params))

  def update_fn(updates, state, params=None):
    inner_state = state.inner
    if steps:
      hit = jnp.any(state.count == jnp.asarray(steps))
      fresh = inner.init(params if params is not None else updates)
      inner_state = jax.tree.map(lambda f, s: jnp.where(hit, f, s), fresh,
                                 inner_state)
    updates, inner_state = inner.update(updates, inner_state, params)
    return updates, ResetState(state.count + 1, inner_state)

  return optax.GradientTransformation(init_fn, update_fn)


def stage_schedule(values: Sequence[float],
                   boundaries: Sequence[int]) -> optax.Schedule:
  """Constant ``values[i]`` from ``boundaries[i-1]`` to ``boundaries[i]``."""
  if len(values) != len(boundaries) + 1:
    raise ValueError('need one more value than boundaries, got '
                     f'{values} and {boundaries}')
  table = jnp.asarray(values, jnp.float32)
  edges = jnp.asarray(boundaries, jnp.int32)

  def schedule(step):
    # Exact table look-up (no products of ratios, so 1e-4 stays 1e-4).
    return table[jnp.sum(jnp.asarray(step) >= edges)]

  return schedule


def make_schedule(kind: str, *, base_lrs: Sequence[float],
                  boundaries: Sequence[int], total_steps: int,
                  warmup_steps: int = 0, poly_power: float = 0.9
                  ) -> optax.Schedule:
  """A learning-rate schedule for one parameter group.

  Args:
    kind: ``'stages'`` (official: constant ``base_lrs[i]`` per stage),
      ``'poly'`` (``base_lrs[0] * (1 - t/T)^power``) or ``'cosine'``.
    base_lrs: per-stage rates for ``'stages'``; ``base_lrs[0]`` otherwise.
    boundaries: stage boundaries in steps (``'stages'`` only).
    total_steps: T.
    warmup_steps: linear warm-up (``'poly'`` and ``'cosine'``).
    poly_power: exponent of ``'poly'``.

  Returns:
    ``step -> lr``.
  """
  if kind == 'stages':
    return stage_schedule(base_lrs, boundaries)
  peak = float(base_lrs[0])
  if kind == 'poly':
    decay = optax.polynomial_schedule(
        peak, 0.0, poly_power, max(total_steps - warmup_steps, 1))
  elif kind == 'cosine':
    decay = optax.cosine_decay_schedule(
        peak, max(total_steps - warmup_steps, 1))
  else:
    raise ValueError(f'Unknown schedule {kind!r}; choose one of '
                     "['stages', 'poly', 'cosine'].")
  if not warmup_steps:
    return decay
  warmup = optax.linear_schedule(0.0, peak, warmup_steps)
  return optax.join_schedules([warmup, decay], [warmup_steps])


def sgd(schedule: optax.Schedule, *, momentum: float, weight_decay: float,
        reset_steps: Sequence[int] = ()) -> optax.GradientTransformation:
  """PyTorch SGD: ``buf = m * buf + (g + wd * p)``, ``p -= lr * buf``."""
  return optax.chain(
      optax.add_decayed_weights(weight_decay),
      reset_at(reset_steps, optax.trace(decay=momentum, nesterov=False)),
      optax.scale_by_learning_rate(schedule),
  )
