"""The L1 penalty on bn2 scales, and the official two-group SGD recipe.

The official code adds ``lamda * sum|gamma|`` to the loss; autograd turns it
into the subgradient ``lamda * sign(gamma)`` (0 at exactly 0). Here it is an
optax transformation that adds ``coef * sign(gamma)`` to the gradients of the
bn2 scales, which is the same update and keeps the loss function free of
parameter bookkeeping. The official code adds its term once per output (M + 1
= 3 outputs) with ``lamda = 2e-4``, so its effective coefficient is 6e-4.

Disjoint slices: modality m is penalised on channels
``[m * C // M, (m + 1) * C // M)``; for M = 2 these are exactly the official
first half (RGB) and second half (depth).
"""

from typing import Any, NamedTuple, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

L1_SCOPES = ('slices', 'all')


def _is_bn2_scale(path: tuple[str, ...]) -> bool:
  return len(path) >= 2 and path[-2] == 'bn2' and path[-1] == 'scale'


def slice_mask(num_modalities: int, channels: int, scope: str) -> np.ndarray:
  """``(M, C)`` float32 with 1 where modality m's channel c is penalised."""
  if scope not in L1_SCOPES:
    raise ValueError(f'Unknown L1 scope {scope!r}; choose one of {L1_SCOPES}.')
  if scope == 'all':
    return np.ones((num_modalities, channels), np.float32)
  mask = np.zeros((num_modalities, channels), np.float32)
  for m in range(num_modalities):
    mask[m, m * channels // num_modalities:
         (m + 1) * channels // num_modalities] = 1.0
  return mask


def l1_masks(params: Any, scope: str = 'slices') -> dict[tuple, np.ndarray]:
  """``{flat path: (M, C) mask}`` for every bn2 scale in ``params``."""
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params))
  return {path: slice_mask(*leaf.shape, scope)
          for path, leaf in flat.items() if _is_bn2_scale(path)}


def l1_value(params: Any, scope: str = 'slices') -> jnp.ndarray:
  """``sum |gamma|`` over the penalised bn2 channels (the raw L1, no coef)."""
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params))
  total = jnp.zeros((), jnp.float32)
  for path, mask in l1_masks(params, scope).items():
    total = total + jnp.sum(jnp.abs(flat[path]) * mask)
  return total


def add_l1_subgradient(coef: float,
                       scope: str = 'slices') -> optax.GradientTransformation:
  """Adds ``coef * sign(gamma) * mask`` to the bn2 scale gradients.

  Args:
    coef: the effective coefficient (6e-4 reproduces the official 3 x 2e-4).
    scope: ``'slices'`` (disjoint per-modality channel slices, CEN) or
      ``'all'`` (every channel of every modality, the ablation).

  Returns:
    A stateless transformation that needs ``params`` in ``update``.
  """

  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError('add_l1_subgradient needs params.')
    flat_p = flax.traverse_util.flatten_dict(flax.core.unfreeze(params))
    flat_u = flax.traverse_util.flatten_dict(flax.core.unfreeze(updates))
    for path, mask in l1_masks(params, scope).items():
      flat_u[path] = flat_u[path] + coef * jnp.sign(flat_p[path]) * mask
    return flax.traverse_util.unflatten_dict(flat_u), state

  return optax.GradientTransformation(init_fn, update_fn)


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
  """Constant ``values[i]`` between ``boundaries[i-1]`` and ``boundaries[i]``."""
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


def param_groups(params: Any) -> Any:
  """``'encoder'`` for the stem and stages, ``'decoder'`` for the rest.

  The official regex ``conv1|bn1|layer`` selects exactly the encoder; the
  decoder group holds the decoder convs, the classifier and alpha.
  """
  return {k: jax.tree.map(lambda _: 'encoder' if k == 'encoder' else
                          'decoder', v)
          for k, v in flax.core.unfreeze(params).items()}


def sgd(schedule: optax.Schedule, *, momentum: float, weight_decay: float,
        reset_steps: Sequence[int] = ()) -> optax.GradientTransformation:
  """PyTorch SGD: ``buf = m * buf + (g + wd * p)``, ``p -= lr * buf``."""
  return optax.chain(
      optax.add_decayed_weights(weight_decay),
      reset_at(reset_steps, optax.trace(decay=momentum, nesterov=False)),
      optax.scale_by_learning_rate(schedule),
  )


def make_optimizer(schedules: dict[str, optax.Schedule], *, momentum: float,
                   weight_decay: float, l1_coef: float, l1_scope: str,
                   reset_steps: Sequence[int] = ()
                   ) -> optax.GradientTransformation:
  """The official optimiser: L1 subgradient, then SGD per parameter group.

  Args:
    schedules: ``{'encoder': schedule, 'decoder': schedule}``.
    momentum: SGD momentum (0.9).
    weight_decay: coupled L2 weight decay on every parameter (1e-5).
    l1_coef: effective L1 coefficient on the bn2 scales (0 disables).
    l1_scope: ``'slices'`` or ``'all'``.
    reset_steps: steps at which momentum buffers are reset (stage starts).

  Returns:
    An ``optax.GradientTransformation`` whose ``update`` needs params.
  """
  groups = {
      name: sgd(schedules[name], momentum=momentum,
                weight_decay=weight_decay, reset_steps=reset_steps)
      for name in ('encoder', 'decoder')
  }
  parts = [optax.multi_transform(groups, param_groups)]
  if l1_coef:
    parts.insert(0, add_l1_subgradient(l1_coef, l1_scope))
  return optax.chain(*parts)

