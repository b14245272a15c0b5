"""Depth and normal losses and metrics, Delta_m and normals from depth.

Every expected number is worked out by hand in the test.
"""

import jax.numpy as jnp
import numpy as np
import pytest

from cen_jax.tasks.multitask import losses
from cen_jax.tasks.multitask import metrics
from data import hha
from data import normals


def test_depth_loss_and_metrics_by_hand():
  # Pixels: (pred, target) = (1, 1), (3, 2), (0.5, 1), (-1, 4), (9, 0 = missing)
  pred = jnp.array([[1.0, 3.0, 0.5], [-1.0, 9.0, 2.0]])
  target = jnp.array([[1.0, 2.0, 1.0], [4.0, 0.0, 0.0]])
  # |err| on the 4 valid pixels: 0, 1, 0.5, 5.
  assert float(losses.depth_l1(pred, target)) == pytest.approx(6.5 / 4)
  sums = {k: np.asarray(v) for k, v in metrics.depth_sums(pred,
                                                          target).items()}
  got = metrics.depth_metrics(sums)
  assert got['abs_err'] == pytest.approx(6.5 / 4)
  # abs rel: 0/1 + 1/2 + 0.5/1 + 5/4 = 2.25.
  assert got['abs_rel'] == pytest.approx(2.25 / 4)
  # squared: 0 + 1 + 0.25 + 25.
  assert got['rmse'] == pytest.approx(np.sqrt(26.25 / 4))
  # delta < 1.25: 1/1 yes, 3/2 no, 1/0.5 no, negative never.
  assert got['delta1'] == pytest.approx(1 / 4)


def test_depth_sums_add_up_across_batches():
  rng = np.random.default_rng(0)
  pred = rng.uniform(0.5, 5, (4, 6, 7)).astype(np.float32)
  target = rng.uniform(0.5, 5, (4, 6, 7)).astype(np.float32)
  target[rng.random(target.shape) < 0.2] = 0
  whole = metrics.depth_metrics(metrics.depth_sums(pred, target))
  parts = [metrics.depth_sums(pred[i:i + 1], target[i:i + 1])
           for i in range(4)]
  summed = {k: sum(np.float64(p[k]) for p in parts) for k in parts[0]}
  for k, v in metrics.depth_metrics(summed).items():
    assert v == pytest.approx(whole[k], rel=1e-6)


def test_normal_loss_and_metrics_by_hand():
  up = [0.0, 0.0, 1.0]
  s, c = np.sin(np.radians(20.0)), np.cos(np.radians(20.0))
  # Angles to the target (0, 0, 1): 0, 20 (pred not unit), 45, 90; the last
  # pixel has no normal (all-zero target) and is ignored.
  pred = jnp.array([[up, [0.0, 2 * s, 2 * c], [1.0, 0.0, 1.0],
                     [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]])
  target = jnp.array([[up, up, up, up, [0.0, 0.0, 0.0]]])
  cos = [1.0, c, np.sqrt(0.5), 0.0]
  assert float(losses.normal_cosine(pred, target)) == pytest.approx(
      1 - np.mean(cos), abs=1e-6)
  got = metrics.normal_metrics(
      {k: np.asarray(v) for k, v in metrics.normal_sums(pred,
                                                        target).items()})
  assert got['mean_angle'] == pytest.approx((0 + 20 + 45 + 90) / 4, abs=1e-4)
  # The histogram median is where the cumulative count reaches half (2 of
  # 4): the end of the 20-degree bin, 20.01 (np.median would average the
  # middle two; the two agree to a bin for image-sized counts, next test).
  assert got['median_angle'] == pytest.approx(20.01, abs=1e-6)
  assert got['within_11.25'] == pytest.approx(1 / 4)
  assert got['within_22.5'] == pytest.approx(2 / 4)
  assert got['within_30'] == pytest.approx(2 / 4)


def test_normal_median_from_histogram_is_within_a_bin():
  rng = np.random.default_rng(1)
  target = rng.standard_normal((2001, 3)).astype(np.float32)
  pred = target + 0.4 * rng.standard_normal((2001, 3)).astype(np.float32)
  angles = np.asarray(metrics.normal_angles(pred, target), np.float64)
  got = metrics.normal_metrics(
      {k: np.asarray(v) for k, v in metrics.normal_sums(pred,
                                                        target).items()})
  assert got['median_angle'] == pytest.approx(np.median(angles),
                                              abs=metrics.NORMAL_BIN_DEG)
  assert got['mean_angle'] == pytest.approx(angles.mean(), rel=1e-5)


def test_delta_m_by_hand():
  baselines = {'semseg': {'miou': 40.0, 'pixel_acc': 60.0},
               'depth': {'abs_err': 0.5}}
  results = {'semseg': {'miou': 44.0, 'pixel_acc': 57.0},
             'depth': {'abs_err': 0.45}}
  # semseg: (+10% - 5%) / 2 = +2.5%; depth: lower is better, -10% error =
  # +10%; mean over the two tasks: 6.25%.
  assert metrics.delta_m(results, baselines) == pytest.approx(6.25)
  assert metrics.delta_m(baselines, baselines) == 0.0
  with pytest.raises(ValueError, match='depth/abs_err is missing'):
    metrics.delta_m(results, {'semseg': baselines['semseg']})
  with pytest.raises(ValueError, match="no direction for metric 'f1'"):
    metrics.delta_m({'edge': {'f1': 1.0}}, {'edge': {'f1': 2.0}})


def test_normals_from_the_depth_of_a_known_plane():
  k = hha.NYU_KINECT_K
  h, w = 40, 56
  n = np.array([0.3, -0.2, -1.0])
  n /= np.linalg.norm(n)  # Facing the camera: n . X < 0 on the plane.
  u = np.arange(1, w + 1)[None, :] * np.ones((h, 1))
  v = np.arange(1, h + 1)[:, None] * np.ones((1, w))
  rays = np.stack([(u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1],
                   np.ones((h, w))], axis=-1)
  depth = -2.0 / (rays @ n)  # The plane n . X = -2 (metres).
  depth[:, :6] = 0.0  # A missing strip.
  out = normals.normals_from_depth(depth, k)
  assert out.dtype == np.float32 and out.shape == (h, w, 3)
  np.testing.assert_allclose(out[4:-4, 10:-4], np.broadcast_to(
      n, out[4:-4, 10:-4].shape), atol=1e-5)
  np.testing.assert_array_equal(out[:, :6], 0.0)  # Missing stays missing.
  with pytest.raises(ValueError, match=r'\(H, W\)'):
    normals.normals_from_depth(depth[..., None], k)
