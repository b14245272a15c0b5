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
first half (RGB) and second half (depth).
"""

from typing import Any, Callable

import flax
import jax.numpy as jnp
import numpy as np
import optax

L1_SCOPES = ('slices', 'all')

# ``select(path) -> bool`` on a flattened parameter path such as
# ``('encoder', 'layer1_0', 'bn2', 'scale')``.
Selector = Callable[[tuple[str, ...]], bool]


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


def _flat(tree: Any) -> dict[tuple[str, ...], Any]:
  return flax.traverse_util.flatten_dict(flax.core.unfreeze(tree))


def l1_masks(params: Any, select: Selector,
             scope: str = 'slices') -> dict[tuple, np.ndarray]:
  """``{flat path: (M, C) mask}`` for every selected ``(M, C)`` scale."""
  return {path: slice_mask(*leaf.shape, scope)
          for path, leaf in _flat(params).items() if select(path)}


def l1_value(params: Any, select: Selector,
             scope: str = 'slices') -> jnp.ndarray:
  """``sum |gamma|`` over the penalised channels (the raw L1, no coef)."""
  flat = _flat(params)
  total = jnp.zeros((), jnp.float32)
  for path, mask in l1_masks(params, select, scope).items():
    total = total + jnp.sum(jnp.abs(flat[path]) * mask)
  return total


def add_l1_subgradient(coef: float, select: Selector,
                       scope: str = 'slices') -> optax.GradientTransformation:
  """Adds ``coef * sign(gamma) * mask`` to the selected scales' gradients.

  Args:
    coef: the effective coefficient (6e-4 reproduces the official 3 x 2e-4
      of segmentation).
    select: which parameters are penalised scales.
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
    flat_p = _flat(params)
    flat_u = _flat(updates)
    for path, mask in l1_masks(params, select, scope).items():
      flat_u[path] = flat_u[path] + coef * jnp.sign(flat_p[path]) * mask
    return flax.traverse_util.unflatten_dict(flat_u), state

  return optax.GradientTransformation(init_fn, update_fn)
