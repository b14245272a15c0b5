"""Shapes of states and variables, and the variables inside a state.

Templates for restoring checkpoints and for compiling come from one helper,
:func:`abstract`, which evaluates a function's output shapes without running
it and attaches the sharding every leaf is to have.
"""

from collections.abc import Mapping
from typing import Any, Callable

import jax


def abstract(fn: Callable[..., Any], *args: Any,
             sharding: jax.sharding.Sharding | None = None) -> Any:
  """``fn(*args)`` as ``jax.ShapeDtypeStruct`` leaves, nothing computed.

  Args:
    fn: a traceable function, e.g. a task's ``init_variables`` or
      ``create_state``.
    *args: its arguments (arrays or ``ShapeDtypeStruct``).
    sharding: attached to every leaf (checkpoints restore to it).

  Returns:
    The output's pytree of ``ShapeDtypeStruct``.
  """
  return with_sharding(jax.eval_shape(fn, *args), sharding)


def with_sharding(shapes: Any,
                  sharding: jax.sharding.Sharding | None) -> Any:
  """``shapes`` (a pytree of ``ShapeDtypeStruct``) with ``sharding`` on
  every leaf, as new structs."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
      shapes)


def subtree(tree: Mapping[str, Any], like: Mapping[str, Any]) -> Any:
  """The part of ``tree`` whose dict keys ``like`` has, recursively.

  E.g. the variables ``{'params', 'batch_stats'}`` inside a state that also
  holds ``step`` and ``opt_state``.

  Raises:
    KeyError: ``like`` names a key ``tree`` does not have.
  """
  if not isinstance(like, Mapping):
    return tree
  return {k: subtree(tree[k], v) for k, v in like.items()}
