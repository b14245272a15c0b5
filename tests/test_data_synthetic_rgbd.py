"""The generated synthetic_rgbd set: determinism, complementary modalities."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

import data
from data import synthetic_rgbd as syn


@pytest.fixture(scope='module')
def default_dir(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp('syn')
  data.prepare('synthetic_rgbd', data_dir=data_dir)
  return data_dir


def _source(data_dir, split, name='synthetic_rgbd'):
  return tfds.data_source(name, split=split, data_dir=data_dir,
                          download=False)


def test_render_is_deterministic_and_well_formed():
  a = syn.render(32, np.random.default_rng([0, 0, 5]))
  b = syn.render(32, np.random.default_rng([0, 0, 5]))
  for key in a:
    np.testing.assert_array_equal(a[key], b[key])
  assert a['rgb'].shape == (32, 32, 3) and a['rgb'].dtype == np.uint8
  assert a['depth'].dtype == np.uint16 and a['label'].dtype == np.uint8
  assert set(np.unique(a['label'])) <= set(range(7)) | {255}


def test_camera_matrix():
  np.testing.assert_allclose(syn.camera_matrix(64),
                             [[56, 0, 32.5], [0, 56, 32.5], [0, 0, 1]])


def test_tiny_builds_identically_twice(tmp_path):
  for d in ('a', 'b'):
    data.prepare('synthetic_rgbd/tiny', data_dir=tmp_path / d)
  for split, n in (('train', 16), ('test', 8)):
    a = _source(tmp_path / 'a', split, 'synthetic_rgbd/tiny')
    b = _source(tmp_path / 'b', split, 'synthetic_rgbd/tiny')
    assert len(a) == len(b) == n
    for i in range(n):
      for key in ('rgb', 'depth', 'label', 'hha', 'name'):
        np.testing.assert_array_equal(a[i][key], b[i][key])


def test_default_split_sizes_and_conventions(default_dir):
  train, test = _source(default_dir, 'train'), _source(default_dir, 'test')
  assert (len(train), len(test)) == (200, 50)
  meta = train.dataset_info.metadata
  assert meta['class_names'] == list(syn.CLASS_NAMES)
  ex = train[0]
  assert ex['rgb'].shape == (64, 64, 3) and ex['hha'].shape == (64, 64, 3)
  labels = np.stack([train[i]['label'] for i in range(20)])
  depths = np.stack([train[i]['depth'] for i in range(20)])
  assert set(np.unique(labels)) == set(range(7)) | {255}
  assert 0 < (labels == 255).mean() < 0.1  # Mixed boundary pixels only.
  assert 0 < (depths == 0).mean() < 0.05  # A few holes.
  metres = depths[depths > 0] / 5000.0
  assert 0.5 < metres.min() and metres.max() < 10.0


def _pixels(src):
  x, y = [], []
  for i in range(len(src)):
    ex = src[i]
    x.append(np.concatenate([ex['rgb'], ex['hha']], -1).reshape(-1, 6))
    y.append(ex['label'].ravel())
  x, y = np.concatenate(x).astype(np.float64), np.concatenate(y)
  return x[y != 255], y[y != 255]


def _gaussian_classifier_miou(train, test, cols):
  """mIoU of a per-pixel Gaussian (QDA) classifier on feature ``cols``."""
  (xtr, ytr), (xte, yte) = train, test
  xtr, xte = xtr[:, cols], xte[:, cols]
  scores = []
  for k in range(syn.NUM_CLASSES):
    x = xtr[ytr == k]
    cov = np.atleast_2d(np.cov(x.T)) + np.eye(len(cols))
    d = xte - x.mean(0)
    scores.append(-0.5 * np.einsum('ni,ij,nj->n', d, np.linalg.inv(cov), d)
                  - 0.5 * np.linalg.slogdet(cov)[1])
  pred = np.argmax(np.stack(scores, 1), 1)
  k = syn.NUM_CLASSES
  cm = np.bincount(yte * k + pred, minlength=k * k).reshape(k, k)
  return np.mean(np.diag(cm) / (cm.sum(0) + cm.sum(1) - np.diag(cm)))


def test_fusing_rgb_and_depth_beats_either_alone(default_dir):
  train = _pixels(_source(default_dir, 'train'))
  test = _pixels(_source(default_dir, 'test'))
  rgb = _gaussian_classifier_miou(train, test, [0, 1, 2])
  depth = _gaussian_classifier_miou(train, test, [3, 4, 5])  # HHA.
  fused = _gaussian_classifier_miou(train, test, list(range(6)))
  # Colour cannot tell floor/wall/grey objects apart, geometry cannot
  # tell tiles from floor or red from grey blocks.
  assert rgb < 0.45 and depth < 0.45
  assert fused > max(rgb, depth) + 0.3
