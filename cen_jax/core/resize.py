"""The three resamplers of the official code, kept distinct on purpose.

The official CEN code resizes with three different kernels (reference §11.7):
the decoder upsamples with bilinear ``align_corners=True``, the loss upsamples
logits with bilinear ``align_corners=False`` (half-pixel centres), and the
evaluation resizes logits with OpenCV's bicubic (a = -0.75). Each is written
here as a pair of small interpolation matrices applied with ``einsum`` over
the two spatial axes: exact PyTorch/OpenCV arithmetic, shape-static, and
differentiable.

All functions take channels-last arrays ``(..., H, W, C)``.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np


@functools.lru_cache(maxsize=256)
def _linear_matrix(in_size: int, out_size: int,
                   align_corners: bool) -> np.ndarray:
  """(out, in) 1-D linear interpolation weights, as PyTorch computes them."""
  w = np.zeros((out_size, in_size), np.float64)
  dst = np.arange(out_size, dtype=np.float64)
  if align_corners:
    scale = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
    src = dst * scale
  else:
    src = (dst + 0.5) * (in_size / out_size) - 0.5
    src = np.maximum(src, 0.0)  # PyTorch clamps negative sources to 0.
  i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
  i1 = np.minimum(i0 + 1, in_size - 1)
  lam = src - i0
  rows = np.arange(out_size)
  np.add.at(w, (rows, i0), 1.0 - lam)
  np.add.at(w, (rows, i1), lam)
  return w.astype(np.float32)


def _apply_separable(x: jnp.ndarray, wh: np.ndarray,
                     ww: np.ndarray) -> jnp.ndarray:
  with jax.named_scope('resize'):
    wh = jnp.asarray(wh, x.dtype)
    ww = jnp.asarray(ww, x.dtype)
    x = jnp.einsum('oh,...hwc->...owc', wh, x,
                   precision='highest')
    return jnp.einsum('pw,...owc->...opc', ww, x, precision='highest')


def resize_bilinear(x: jnp.ndarray, size: tuple[int, int], *,
                    align_corners: bool) -> jnp.ndarray:
  """Bilinear resize of ``(..., H, W, C)`` to ``size = (H', W')``.

  Args:
    x: channels-last array.
    size: output spatial size.
    align_corners: ``True`` for the decoder's upsampling
      (``nn.Upsample(align_corners=True)``), ``False`` for the loss's
      ``F.interpolate`` (half-pixel centres, as ``jax.image.resize``).

  Returns:
    ``(..., H', W', C)`` in ``x.dtype``.
  """
  h, w = x.shape[-3], x.shape[-2]
  if (h, w) == tuple(size):
    return x
  return _apply_separable(x, _linear_matrix(h, size[0], align_corners),
                          _linear_matrix(w, size[1], align_corners))


# OpenCV's cubic convolution constant (``interpolateCubic`` in imgproc).
_CV2_CUBIC_A = -0.75


@functools.lru_cache(maxsize=256)
def _cubic_matrix_cv2(in_size: int, out_size: int) -> np.ndarray:
  """(out, in) 1-D cubic weights, as ``cv2.INTER_CUBIC`` computes them.

  OpenCV maps ``dst`` to ``src = (dst + 0.5) * in / out - 0.5`` and rounds it
  to float32 before the floor; it keeps negative sources (unlike PyTorch's
  bilinear) and replicates the border for taps outside ``[0, in)``, so those
  weights pile up on the first/last pixel.
  """
  a = _CV2_CUBIC_A
  dst = np.arange(out_size, dtype=np.float64)
  src = ((dst + 0.5) * (in_size / out_size) - 0.5).astype(np.float32)
  src = src.astype(np.float64)
  i = np.floor(src).astype(np.int64)
  t = src - i
  c0 = ((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a
  c1 = ((a + 2) * t - (a + 3)) * t * t + 1
  c2 = ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1
  c3 = 1.0 - c0 - c1 - c2  # OpenCV's choice: the 4 taps sum to exactly 1.
  w = np.zeros((out_size, in_size), np.float64)
  rows = np.arange(out_size)
  for k, c in enumerate((c0, c1, c2, c3)):
    np.add.at(w, (rows, np.clip(i - 1 + k, 0, in_size - 1)), c)
  return w.astype(np.float32)


def resize_bicubic_cv2(x: jnp.ndarray, size: tuple[int, int]) -> jnp.ndarray:
  """OpenCV bicubic resize of ``(..., H, W, C)`` to ``size = (H', W')``.

  Equals ``cv2.resize(x, (W', H'), interpolation=cv2.INTER_CUBIC)`` on float32
  input (a = -0.75, half-pixel centres, border replicated, no antialiasing
  when shrinking), which the official evaluation applies to the
  1/4-resolution logits before the argmax (reference §6). Unlike cv2 it takes
  any number of channels and leading batch axes.

  Args:
    x: channels-last float array.
    size: output spatial size ``(H', W')`` (note: cv2 takes ``(W', H')``).

  Returns:
    ``(..., H', W', C)`` in ``x.dtype``.
  """
  h, w = x.shape[-3], x.shape[-2]
  if (h, w) == tuple(size):
    return x
  return _apply_separable(x, _cubic_matrix_cv2(h, size[0]),
                          _cubic_matrix_cv2(w, size[1]))
