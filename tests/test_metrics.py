"""Tests for cen_jax.metrics against hand-worked answers."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from cen_jax.tasks.segmentation import metrics

# Three (2, 3) examples, K = 3. Example 1 is batch padding (valid=False).
_LABELS = np.array([
    [[0, 0, 1], [2, 255, 1]],
    [[0, 0, 0], [0, 0, 0]],
    [[1, 1, 255], [2, 2, 2]],
])
_PREDS = np.array([
    [[0, 1, 1], [2, 2, 0]],
    [[2, 2, 2], [2, 2, 2]],
    [[1, 1, 1], [2, 0, 2]],
])
_VALID = np.array([True, False, True])
# Pairs (gt, pred) counted: ex. 0: (0,0) (0,1) (1,1) (2,2) (1,0);
# ex. 2: (1,1) (1,1) (2,2) (2,0) (2,2); the two 255 pixels are skipped.
_CONF = np.array([
    [1, 1, 0],
    [1, 3, 0],
    [1, 0, 3],
])


def test_confusion_matrix_by_hand():
  got = metrics.confusion_matrix(jnp.asarray(_LABELS), jnp.asarray(_PREDS),
                                 3, valid=jnp.asarray(_VALID))
  assert got.shape == (3, 3)
  assert got.dtype == jnp.int32
  np.testing.assert_array_equal(np.asarray(got), _CONF)


def test_confusion_matrix_without_valid_counts_every_example():
  got = metrics.confusion_matrix(jnp.asarray(_LABELS), jnp.asarray(_PREDS), 3)
  want = _CONF.copy()
  want[0, 2] += 6  # the padding example: six pixels of 0 predicted as 2
  np.testing.assert_array_equal(np.asarray(got), want)


def test_confusion_matrix_skips_out_of_range_predictions():
  labels = jnp.array([[0, 1, 1]])
  preds = jnp.array([[0, 3, 1]])  # 3 is not a class when K = 2
  got = metrics.confusion_matrix(labels, preds, 2)
  np.testing.assert_array_equal(np.asarray(got), [[1, 0], [0, 1]])


def test_confusion_matrix_under_jit():
  fn = jax.jit(metrics.confusion_matrix, static_argnums=2)
  got = fn(jnp.asarray(_LABELS), jnp.asarray(_PREDS), 3,
           jnp.asarray(_VALID))
  np.testing.assert_array_equal(np.asarray(got), _CONF)


def _official_confusion(labels, preds, n):
  """The official ``confusion_matrix`` on pre-filtered gt, for reference."""
  k = labels < n
  return np.bincount(n * labels[k] + preds[k],
                     minlength=n**2).reshape(n, n)


def test_confusion_matrix_sharded_over_batch_matches_numpy():
  rng = np.random.default_rng(0)
  k = 5
  labels = rng.integers(0, k, (8, 6, 7))
  labels[rng.random(labels.shape) < 0.2] = 255
  preds = rng.integers(0, k, (8, 6, 7))
  valid = np.array([True] * 6 + [False] * 2)
  mesh = jax.make_mesh((4,), ('data',),
                       axis_types=(jax.sharding.AxisType.Auto,))
  batch = NamedSharding(mesh, P('data'))
  fn = jax.jit(functools.partial(metrics.confusion_matrix, num_classes=k),
               out_shardings=NamedSharding(mesh, P()))
  got = fn(jax.device_put(labels, batch), jax.device_put(preds, batch),
           valid=jax.device_put(valid, batch))
  want = _official_confusion(labels[:6], preds[:6], k)
  np.testing.assert_array_equal(np.asarray(got), want)


def test_scores_by_hand_with_a_class_absent_everywhere():
  # _CONF plus a 4th class absent from ground truth and prediction.
  conf = np.zeros((4, 4), np.int64)
  conf[:3, :3] = _CONF
  got = metrics.scores(conf, class_names=['wall', 'floor', 'bed', 'sofa'])
  # 7 of 10 pixels right.
  assert math.isclose(got['pixel_acc'], 70.0)
  # accuracies 1/2, 3/4, 3/4; sofa is 0/0 and skipped.
  assert math.isclose(got['mean_acc'], 200 / 3)
  # IoUs 1/(2+3-1), 3/(4+4-3), 3/(4+3-3); sofa skipped.
  assert math.isclose(got['miou'], (25 + 60 + 75) / 3)
  iou = got['iou_per_class']
  assert list(iou) == ['wall', 'floor', 'bed', 'sofa']
  np.testing.assert_allclose([iou['wall'], iou['floor'], iou['bed']],
                             [25.0, 60.0, 75.0])
  assert math.isnan(iou['sofa'])


def test_scores_class_predicted_but_never_present():
  # Class 1 never occurs in the ground truth but is predicted once: it has
  # no accuracy (0/0, skipped) but an IoU of 0 that counts in mIoU.
  got = metrics.scores(np.array([[2, 1], [0, 0]]))
  assert math.isclose(got['pixel_acc'], 200 / 3)
  assert math.isclose(got['mean_acc'], 200 / 3)
  assert math.isclose(got['miou'], 100 / 3)
  assert list(got['iou_per_class']) == [0, 1]  # indices without names
  np.testing.assert_allclose(list(got['iou_per_class'].values()),
                             [200 / 3, 0.0])


def test_scores_perfect_prediction():
  got = metrics.scores(np.diag([5, 0, 7]))
  assert got['pixel_acc'] == 100.0
  assert got['mean_acc'] == 100.0
  assert got['miou'] == 100.0
  assert math.isnan(got['iou_per_class'][1])


def test_scores_of_an_empty_matrix_are_zero():
  got = metrics.scores(np.zeros((3, 3), np.int32))
  assert (got['pixel_acc'], got['mean_acc'], got['miou']) == (0.0, 0.0, 0.0)
  assert all(math.isnan(v) for v in got['iou_per_class'].values())


def test_scores_accepts_a_device_array_and_checks_names():
  conf = metrics.confusion_matrix(jnp.asarray(_LABELS), jnp.asarray(_PREDS),
                                  3, valid=jnp.asarray(_VALID))
  assert math.isclose(metrics.scores(conf)['pixel_acc'], 70.0)
  with pytest.raises(ValueError, match='2 class names for 3 classes'):
    metrics.scores(conf, class_names=['a', 'b'])
