"""The generated Taskonomy-like set: layout, determinism, needs both inputs."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

import data
from data import synthetic_translation as syn
from data import taskonomy


def _scene(split, i, size=40):
  """One scene as the model sees it: after the official preprocessing."""
  raw = syn.render(size, np.random.default_rng([0, split, i]))
  return {d: taskonomy.preprocess(x, d) for d, x in raw.items()}


def test_render_is_deterministic_and_stored_like_taskonomy():
  a = syn.render(24, np.random.default_rng([0, 0, 5]))
  b = syn.render(24, np.random.default_rng([0, 0, 5]))
  for key in syn.DOMAINS:
    np.testing.assert_array_equal(a[key], b[key])
  assert a['rgb'].shape == (24, 24, 3) and a['rgb'].dtype == np.uint8
  assert a['normal'].shape == (24, 24, 3) and a['reshading'].ndim == 2
  assert a['edge_texture'].dtype == a['depth_zbuffer'].dtype == np.uint16
  # Edges within the official maximum; depth about 2-3.5 m in 1/512 m.
  assert a['edge_texture'].max() <= 11355
  assert 1.4 * 512 < a['depth_zbuffer'].min()
  assert a['depth_zbuffer'].max() < 4.1 * 512


def test_write_taskonomy_folder_official_layout(tmp_path):
  root = syn.write_taskonomy_folder(tmp_path / 'f', num_train=3, num_test=2,
                                    size=16, seed=4)
  assert (root / 'train_domain.txt').read_text() == '\n'.join(
      f'{{domain}}/point_{i}_view_0_domain_{{domain}}.png' for i in range(3))
  assert [e.name for e in taskonomy.read_list(root / 'val_domain.txt')] == [
      'point_0_view_1', 'point_1_view_1']
  scene = syn.render(16, np.random.default_rng([4, 1, 1]))
  for d in syn.DOMAINS:
    path = root / d / f'point_1_view_1_domain_{d}.png'
    np.testing.assert_array_equal(taskonomy.load_domain(path, d),
                                  taskonomy.preprocess(scene[d], d))
  with pytest.raises(FileExistsError, match='not an empty directory'):
    syn.write_taskonomy_folder(root, num_train=1, num_test=1, size=16,
                               seed=0)


def test_tiny_builds_identically_twice_through_taskonomy_code(tmp_path):
  for d in ('a', 'b'):
    builder = data.prepare('synthetic_taskonomy/tiny', data_dir=tmp_path / d)
  assert builder.info.metadata['domains'] == [
      'rgb', 'normal', 'reshading', 'depth_zbuffer', 'edge_texture']
  assert (tmp_path / 'a' / 'downloads' / 'synthetic_taskonomy' /
          '40px_16_8_seed0' / 'train_domain.txt').is_file()
  for split, n in (('train', 16), ('test', 8)):
    a, b = (tfds.data_source('synthetic_taskonomy/tiny', split=split,
                             data_dir=tmp_path / d, download=False)
            for d in ('a', 'b'))
    assert len(a) == len(b) == n
    for i in range(n):
      assert a[i]['name'] == b[i]['name']
      np.testing.assert_array_equal(a[i]['images'], b[i]['images'])
  # Stored = rendered with the seed, then officially preprocessed.
  scene = _scene(1, 7)
  for d, image in zip(builder.info.metadata['domains'], a[7]['images']):
    np.testing.assert_array_equal(image, scene[d])


def _features(scenes):
  """Per-pixel shading bin (32), edge bin (32) and RGB, stacked."""
  shade = np.concatenate([s['reshading'][..., 0].ravel() for s in scenes])
  edge = np.concatenate([s['edge_texture'][..., 0].ravel() for s in scenes])
  rgb = np.concatenate([s['rgb'].reshape(-1, 3) for s in scenes])
  return shade.astype(int) // 8, edge.astype(int) // 8, rgb.astype(float)


def _best_predictor_mse(train_keys, train_rgb, test_keys, test_rgb):
  """Held-out MSE of the conditional mean of RGB given a discrete key."""
  n = max(train_keys.max(), test_keys.max()) + 1
  counts = np.bincount(train_keys, minlength=n)
  sums = np.stack([np.bincount(train_keys, train_rgb[:, c], minlength=n)
                   for c in range(3)], axis=-1)
  table = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None],
                   train_rgb.mean(axis=0))
  return float(np.mean((table[test_keys] - test_rgb) ** 2))


def test_rgb_needs_both_shading_and_texture_edges():
  """The best per-pixel RGB predictor from both inputs beats either alone.

  Predictors are conditional means fitted on 300 scenes and scored on 50
  others (40x40, uint8 values as the model sees them).
  """
  shade, edge, rgb = _features([_scene(0, i) for i in range(300)])
  shade_t, edge_t, rgb_t = _features([_scene(1, i) for i in range(50)])
  mse = {
      'none': _best_predictor_mse(0 * shade, rgb, 0 * shade_t, rgb_t),
      'reshading': _best_predictor_mse(shade, rgb, shade_t, rgb_t),
      'edge_texture': _best_predictor_mse(edge, rgb, edge_t, rgb_t),
      'both': _best_predictor_mse(shade * 32 + edge, rgb,
                                  shade_t * 32 + edge_t, rgb_t),
  }
  # Measured: none 1465, reshading 1147, edge_texture 504, both 6.
  assert mse['reshading'] > 0.6 * mse['none']  # Shading misses the paint.
  assert mse['edge_texture'] > 0.25 * mse['none']  # Edges miss the light.
  assert mse['both'] < 0.05 * min(mse['reshading'], mse['edge_texture'])
  assert mse['both'] < 20  # Under 4.5 of 255 per channel.
