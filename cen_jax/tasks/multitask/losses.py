"""Losses of the dense regression tasks, averaged over valid pixels.

The conventions are those of the NYUv2 multitask benchmark (MTAN, LibMTL):
depth 0 marks a missing pixel; an all-zero normal marks a missing normal.
"""

import jax.numpy as jnp

_EPS = 1e-12


def depth_valid(target: jnp.ndarray) -> jnp.ndarray:
  """Pixels with a depth: ``target > 0``."""
  return target > 0


def normal_valid(target: jnp.ndarray) -> jnp.ndarray:
  """Pixels with a normal: any component non-zero (last axis)."""
  return jnp.any(target != 0, axis=-1)


def unit(x: jnp.ndarray) -> jnp.ndarray:
  """``x`` scaled to unit length along the last axis (0 stays 0)."""
  norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True))
  return x / jnp.maximum(norm, _EPS)


def depth_l1(pred: jnp.ndarray, target: jnp.ndarray) -> jnp.ndarray:
  """Mean ``|pred - target|`` over pixels with a depth; 0 if there are none.

  Args:
    pred: ``(..., H, W)`` predicted depth.
    target: same shape, 0 where missing.
  """
  valid = depth_valid(target)
  err = jnp.where(valid, jnp.abs(pred - target), 0.0)
  return jnp.sum(err) / jnp.maximum(jnp.sum(valid), 1)


def normal_cosine(pred: jnp.ndarray, target: jnp.ndarray) -> jnp.ndarray:
  """``1 - mean cos(pred, target)`` over pixels with a normal.

  ``pred`` is normalised first (as MTAN does), so only its direction counts;
  ``target`` is used as given (unit normals).

  Args:
    pred: ``(..., H, W, 3)``.
    target: same shape, all-zero where missing.
  """
  valid = normal_valid(target)
  cos = jnp.sum(unit(pred) * target, axis=-1)
  return 1.0 - jnp.sum(jnp.where(valid, cos, 0.0)) / jnp.maximum(
      jnp.sum(valid), 1)
