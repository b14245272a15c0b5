"""The L1 penalty on the norm scales that decide where channels are exchanged.

CEN penalises ``sum |gamma|`` of the normalisation layer at every exchange
site, each modality (or stream) on its own disjoint slice of the channels,
which drives those scales towards zero until the exchange rule replaces the
channels. The official code adds ``lamda * sum|gamma|`` to the loss; autograd
turns it into the subgradient ``lamda * sign(gamma)`` (0 at exactly 0). Here
it is an optax transformation that adds ``coef * sign(gamma) * mask`` to the
gradients of the selected scales: the same update, and the loss function
stays free of parameter bookkeeping.

Which scales are penalised is the task's choice, given as a predicate on the
flattened parameter path (segmentation: every Bottleneck's ``bn2/scale``).

Disjoint slices: modality m is penalised on channels
``[m * C // M, (m + 1) * C // M)``; for M = 2 these are exactly the official
first half (RGB) and second half (depth). Streams that exchange only within
groups (the passes of the multitask core) are sliced within their group.
"""

from typing import Any, Callable, Sequence

import flax
import jax.numpy as jnp
import numpy as np
import optax

L1_SCOPES = ('slices', 'all')

# ``select(path) -> bool`` on a flattened parameter path such as
# ``('encoder', 'layer1_0', 'bn2', 'scale')``.
Selector = Callable[[tuple[str, ...]], bool]
# A partition of the modality (stream) rows into groups that exchange
# among themselves; None = one group of all.
Groups = Sequence[Sequence[int]] | None


def slice_mask(num_modalities: int, channels: int, scope: str,
               groups: Groups = None) -> np.ndarray:
  """``(M, C)`` float32 with 1 where modality m's channel c is penalised.

  ``groups`` (a partition of the M rows, e.g. the passes of the multitask
  core, whose streams exchange only within their pass) slices the channels
  within each group instead: its k-th of n streams gets
  ``[k C / n, (k + 1) C / n)``, and a group of one, with nobody to exchange
  with, is not penalised. None is one group of all M.
  """
  if scope not in L1_SCOPES:
    raise ValueError(f'Unknown L1 scope {scope!r}; choose one of {L1_SCOPES}.')
  if scope == 'all':
    return np.ones((num_modalities, channels), np.float32)
  if groups is None:
    groups = (tuple(range(num_modalities)),)
  if sorted(m for g in groups for m in g) != list(range(num_modalities)):
    raise ValueError(f'L1 groups {groups} are not a partition of the '
                     f'{num_modalities} modalities/streams')
  mask = np.zeros((num_modalities, channels), np.float32)
  for group in groups:
    n = len(group)
    if n == 1 and num_modalities > 1:
      continue
    for k, m in enumerate(group):
      mask[m, k * channels // n:(k + 1) * channels // n] = 1.0
  return mask


def _flat(tree: Any) -> dict[tuple[str, ...], Any]:
  return flax.traverse_util.flatten_dict(flax.core.unfreeze(tree))


def l1_masks(params: Any, select: Selector, scope: str = 'slices',
             groups: Groups = None) -> dict[tuple, np.ndarray]:
  """``{flat path: (M, C) mask}`` for every selected ``(M, C)`` scale."""
  return {path: slice_mask(*leaf.shape, scope, groups)
          for path, leaf in _flat(params).items() if select(path)}


def l1_value(params: Any, select: Selector, scope: str = 'slices',
             groups: Groups = None) -> jnp.ndarray:
  """``sum |gamma|`` over the penalised channels (the raw L1, no coef)."""
  flat = _flat(params)
  total = jnp.zeros((), jnp.float32)
  for path, mask in l1_masks(params, select, scope, groups).items():
    total = total + jnp.sum(jnp.abs(flat[path]) * mask)
  return total


def add_l1_subgradient(coef: float, select: Selector,
                       scope: str = 'slices',
                       groups: Groups = None) -> optax.GradientTransformation:
  """Adds ``coef * sign(gamma) * mask`` to the selected scales' gradients.

  Args:
    coef: the effective coefficient (6e-4 reproduces the official 3 x 2e-4
      of segmentation).
    select: which parameters are penalised scales.
    scope: ``'slices'`` (disjoint per-modality channel slices, CEN) or
      ``'all'`` (every channel of every modality, the ablation).
    groups: see ``slice_mask``.

  Returns:
    A stateless transformation that needs ``params`` in ``update``.
  """

  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError('add_l1_subgradient needs params.')
    flat_p = _flat(params)
    flat_u = _flat(updates)
    for path, mask in l1_masks(params, select, scope, groups).items():
      flat_u[path] = flat_u[path] + coef * jnp.sign(flat_p[path]) * mask
    return flax.traverse_util.unflatten_dict(flat_u), state

  return optax.GradientTransformation(init_fn, update_fn)
