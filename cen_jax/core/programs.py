"""Model initialisation compiled once per distinct model in a process.

``jax.jit`` keeps a traced and compiled program per *function object*: every
task object built from a config (a run builds one; ``evaluate``, ``predict``
and the tests' restores build more) traced its model's ``init`` again, once
under ``jax.eval_shape`` for the variable shapes and once more under its own
``jax.jit`` for the values: 1 s per trace for the tests' tiny model, 2 s for
a ResNet-101 CEN. A Flax module is a frozen dataclass, equal and hashable by
its fields, so a module-level ``jax.jit`` that takes the module (and the
input shapes) as static arguments traces and compiles once per distinct
model in a process, whichever object asks; ``jax.eval_shape`` of it reuses
that trace.
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


@functools.partial(jax.jit, static_argnums=(0, 2, 3))
def _init(module: nn.Module, rng: jax.Array,
          shapes: tuple[tuple[tuple[int, ...], np.dtype], ...],
          kwargs: tuple[tuple[str, Any], ...]) -> Any:
  inputs = [jnp.zeros(shape, dtype) for shape, dtype in shapes]
  return module.init(rng, *inputs, **dict(kwargs))


def init(module: nn.Module, rng: jax.Array, *inputs: Any, **kwargs: Any
         ) -> Any:
  """``module.init(rng, *zeros like inputs, **kwargs)``, jitted and shared.

  Args:
    module: a Flax module (hashable: its fields must be).
    rng: the init key.
    *inputs: arrays or ``jax.ShapeDtypeStruct``; only their shapes and
      dtypes are used (the module is initialised on zeros of them).
    **kwargs: hashable keyword arguments of ``init`` (``train=False``).

  Returns:
    The module's variables, equal bit for bit to ``jax.jit(module.init)``
    on zeros of the same shapes.
  """
  shapes = tuple((tuple(x.shape), np.dtype(x.dtype)) for x in inputs)
  return _init(module, rng, shapes, tuple(sorted(kwargs.items())))
