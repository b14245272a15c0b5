"""The official segmentation recipe: L1 on bn2 scales, two-group SGD.

The official code adds its L1 term once per output (M + 1 = 3 outputs) with
``lamda = 2e-4``, so its effective coefficient is 6e-4; the term covers
every Bottleneck's bn2 scale (``cen_jax.core.sparsity``). SGD runs in two
parameter groups with their own learning rates: the encoder (the official
regex ``conv1|bn1|layer``) and the decoder (the RefineNet convs, the
classifier and alpha).
"""

from typing import Any, Sequence

import flax
import jax
import jax.numpy as jnp
import optax

from cen_jax.core import sparsity
from cen_jax.training import optimizers

GROUPS = ('encoder', 'decoder')


def is_bn2_scale(path: tuple[str, ...]) -> bool:
  """The exchange-site scales: ``.../bn2/scale`` of every Bottleneck."""
  return len(path) >= 2 and path[-2] == 'bn2' and path[-1] == 'scale'


def l1_value(params: Any, scope: str = 'slices',
             groups: sparsity.Groups = None) -> jnp.ndarray:
  """``sum |gamma|`` over the penalised bn2 channels (the raw L1, no coef)."""
  return sparsity.l1_value(params, is_bn2_scale, scope, groups)


def add_l1_subgradient(coef: float, scope: str = 'slices',
                       groups: sparsity.Groups = None
                       ) -> optax.GradientTransformation:
  """``sparsity.add_l1_subgradient`` on the bn2 scales."""
  return sparsity.add_l1_subgradient(coef, is_bn2_scale, scope, groups)


def param_groups(params: Any) -> Any:
  """``'encoder'`` for the stem and stages, ``'decoder'`` for the rest.

  The official regex ``conv1|bn1|layer`` selects exactly the encoder; the
  decoder group holds the decoder convs, the classifier and alpha.
  """
  return {k: jax.tree.map(lambda _: 'encoder' if k == 'encoder' else
                          'decoder', v)
          for k, v in flax.core.unfreeze(params).items()}


def make_optimizer(schedules: dict[str, optax.Schedule], *, momentum: float,
                   weight_decay: float, l1_coef: float, l1_scope: str,
                   reset_steps: Sequence[int] = (),
                   l1_groups: sparsity.Groups = None
                   ) -> optax.GradientTransformation:
  """The official optimiser: L1 subgradient, then SGD per parameter group.

  Args:
    schedules: ``{'encoder': schedule, 'decoder': schedule}``.
    momentum: SGD momentum (0.9).
    weight_decay: coupled L2 weight decay on every parameter (1e-5).
    l1_coef: effective L1 coefficient on the bn2 scales (0 disables).
    l1_scope: ``'slices'`` or ``'all'``.
    reset_steps: steps at which momentum buffers are reset (stage starts).
    l1_groups: streams that exchange among themselves (``sparsity``).

  Returns:
    An ``optax.GradientTransformation`` whose ``update`` needs params.
  """
  groups = {
      name: optimizers.sgd(schedules[name], momentum=momentum,
                           weight_decay=weight_decay, reset_steps=reset_steps)
      for name in GROUPS
  }
  parts = [optax.multi_transform(groups, param_groups)]
  if l1_coef:
    parts.insert(0, add_l1_subgradient(l1_coef, l1_scope, l1_groups))
  return optax.chain(*parts)
