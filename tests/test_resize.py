"""Tests for cen_jax.resize: hand-computed bilinear, cv2-exact bicubic."""

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cen_jax.core import resize

# OpenCV 5 rejects more than 128 channels in one Mat.
_CV2_MAX_CHANNELS = 128


def _cv2_bicubic(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """cv2.resize INTER_CUBIC of (H, W, C), in channel chunks cv2 accepts."""
  chunks = []
  for start in range(0, x.shape[-1], _CV2_MAX_CHANNELS):
    part = np.ascontiguousarray(x[..., start:start + _CV2_MAX_CHANNELS])
    out = cv2.resize(part, (size[1], size[0]),
                     interpolation=cv2.INTER_CUBIC)
    # cv2 drops a trailing channel axis of size 1.
    chunks.append(out.reshape(size[0], size[1], part.shape[-1]))
  return np.concatenate(chunks, axis=-1)


def _assert_close_to_cv2(x: np.ndarray, size: tuple[int, int]) -> None:
  got = np.asarray(resize.resize_bicubic_cv2(jnp.asarray(x), size))
  want = _cv2_bicubic(x, size)
  assert got.shape == want.shape
  assert got.dtype == np.float32
  np.testing.assert_allclose(got, want, rtol=0,
                             atol=1e-5 * np.abs(x).max())


@pytest.mark.parametrize('in_hw,out_hw,channels', [
    ((16, 24), (64, 96), 3),       # the decoder's 4x, small
    ((117, 157), (468, 625), 40),  # NYUDv2 logits -> a label-sized map
    ((7, 5), (23, 11), 1),         # odd, non-integer factors, one channel
    ((5, 9), (5, 31), 2),          # one axis unchanged
    ((3, 3), (100, 1), 3),         # every tap clamped to the border
])
def test_bicubic_upsampling_matches_cv2(in_hw, out_hw, channels):
  rng = np.random.default_rng(0)
  x = rng.standard_normal(in_hw + (channels,)).astype(np.float32)
  _assert_close_to_cv2(x, out_hw)


@pytest.mark.parametrize('in_hw,out_hw', [
    ((64, 96), (16, 24)),
    ((50, 50), (37, 61)),  # shrink one axis, grow the other
    ((31, 17), (8, 5)),
])
def test_bicubic_downsampling_matches_cv2(in_hw, out_hw):
  rng = np.random.default_rng(1)
  x = rng.uniform(-3, 3, in_hw + (4,)).astype(np.float32)
  _assert_close_to_cv2(x, out_hw)


def test_bicubic_more_channels_than_cv2_takes():
  rng = np.random.default_rng(2)
  x = rng.standard_normal((9, 13, 200)).astype(np.float32)
  _assert_close_to_cv2(x, (20, 27))


def test_bicubic_identity_returns_input():
  x = np.random.default_rng(3).standard_normal((10, 12, 5))
  x = x.astype(np.float32)
  got = resize.resize_bicubic_cv2(jnp.asarray(x), (10, 12))
  np.testing.assert_array_equal(np.asarray(got), x)
  np.testing.assert_array_equal(x, _cv2_bicubic(x, (10, 12)))


def test_bicubic_constant_stays_constant():
  # OpenCV's four weights sum to one, border taps included.
  x = jnp.full((1, 6, 7, 2), 2.5, jnp.float32)
  got = resize.resize_bicubic_cv2(x, (19, 4))
  np.testing.assert_allclose(np.asarray(got), 2.5, rtol=1e-6)


def test_bicubic_leading_axes_and_jit():
  rng = np.random.default_rng(4)
  x = rng.standard_normal((2, 3, 8, 10, 6)).astype(np.float32)
  fn = jax.jit(lambda v: resize.resize_bicubic_cv2(v, (32, 40)))
  got = np.asarray(fn(jnp.asarray(x)))
  assert got.shape == (2, 3, 32, 40, 6)
  for i in range(2):
    for j in range(3):
      np.testing.assert_allclose(got[i, j], _cv2_bicubic(x[i, j], (32, 40)),
                                 rtol=0, atol=1e-5 * np.abs(x).max())


def test_bilinear_align_corners_2x2_to_3x3():
  a, b, c, d = 1.0, 3.0, 5.0, 11.0
  x = jnp.array([[a, b], [c, d]], jnp.float32)[None, :, :, None]
  got = resize.resize_bilinear(x, (3, 3), align_corners=True)[0, :, :, 0]
  want = [[a, (a + b) / 2, b],
          [(a + c) / 2, (a + b + c + d) / 4, (b + d) / 2],
          [c, (c + d) / 2, d]]
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6)


def test_bilinear_align_corners_1d_2_to_5():
  # Output samples sit at 0, 1/4, 1/2, 3/4, 1 of the input span.
  x = jnp.array([2.0, 10.0], jnp.float32)[None, :, None]
  got = resize.resize_bilinear(x, (1, 5), align_corners=True)[0, :, 0]
  np.testing.assert_allclose(np.asarray(got), [2, 4, 6, 8, 10], rtol=1e-6)


def test_bilinear_half_pixel_2_to_4():
  x0, x1 = 2.0, 10.0
  x = jnp.array([x0, x1], jnp.float32)[:, None, None]
  got = resize.resize_bilinear(x, (4, 1), align_corners=False)[:, 0, 0]
  want = [x0, .75 * x0 + .25 * x1, .25 * x0 + .75 * x1, x1]
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6)


def test_bilinear_half_pixel_4_to_2_averages_pairs():
  # Downsampling by 2 samples exactly between input pixels 0/1 and 2/3.
  x = jnp.array([1.0, 3.0, 7.0, 13.0], jnp.float32)[None, :, None]
  got = resize.resize_bilinear(x, (1, 2), align_corners=False)[0, :, 0]
  np.testing.assert_allclose(np.asarray(got), [2.0, 10.0], rtol=1e-6)


def test_bilinear_half_pixel_upsampling_matches_jax_image():
  # jax.image.resize uses half-pixel centres too; without antialiasing
  # (upsampling) the two agree.
  x = jax.random.normal(jax.random.key(0), (2, 5, 7, 3))
  got = resize.resize_bilinear(x, (20, 28), align_corners=False)
  want = jax.image.resize(x, (2, 20, 28, 3), 'bilinear')
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)
