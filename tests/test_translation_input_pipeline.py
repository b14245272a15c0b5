"""Known-answer tests of the official translation transforms and loaders."""

import numpy as np
import pytest

import data
from cen_jax.tasks.translation import input_pipeline as tp

_NAME = 'synthetic_taskonomy/tiny'  # 40x40, 16 train / 8 test.
_IO = {'inputs': ('reshading', 'edge_texture'), 'target': 'rgb'}
_STORED = ('rgb', 'normal', 'reshading', 'depth_zbuffer', 'edge_texture')


@pytest.fixture(scope='module')
def tiny_dir(tmp_path_factory):
  return tmp_path_factory.mktemp('tiny')


@pytest.fixture(scope='module')
def tiny_train(tiny_dir):
  return tp.get_source(_NAME, 'train', data_dir=tiny_dir)


@pytest.fixture(scope='module')
def tiny_test(tiny_dir):
  return tp.get_source(_NAME, 'test', data_dir=tiny_dir)


def _norm(x):
  return (np.asarray(x, np.float32) / np.float32(255) - np.float32(0.5)
          ) / np.float32(0.5)


def _take(loader, n, it=None):
  it = iter(loader) if it is None else it
  return [next(it) for _ in range(n)], it


def _assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])


# Transforms.


def _ramp(values):
  """(len, len, 3) uint8 image whose every row is ``values``."""
  n = len(values)
  return np.broadcast_to(np.array(values, np.uint8)[None, :, None],
                         (n, n, 3)).copy()


def test_resize_is_pil_bilinear_with_antialiasing():
  # Upsampling 2 -> 4: sample centres at -0.25, 0.25, 0.75, 1.25.
  np.testing.assert_array_equal(tp.resize(_ramp([0, 100]), 4, 4)[0, :, 0],
                                [0, 25, 75, 100])
  # Downsampling 4 -> 2 widens the triangle filter to 2 pixels:
  # (0.75 * 0 + 0.75 * 40 + 0.25 * 80) / 1.75 = 28.6, and
  # (0.25 * 40 + 0.75 * 80 + 0.75 * 120) / 1.75 = 91.4 (cv2 gives 20, 100).
  out = tp.resize(_ramp([0, 40, 80, 120]), 4, 2)
  assert out.shape == (4, 2, 3)
  np.testing.assert_array_equal(out[0, :, 0], [29, 91])
  image = _ramp([1, 2, 3])
  assert tp.resize(image, 3, 3) is image


def test_eval_size_is_torchvision_resize():
  assert tp.eval_size(512, 512, 256) == (256, 256)
  assert tp.eval_size(300, 600, 256) == (256, 512)
  assert tp.eval_size(600, 300, 256) == (512, 256)
  assert tp.eval_size(3, 5, 2) == (2, 3)  # int(2 * 5 / 3) = 3.
  assert tp.eval_size(256, 400, 256) == (256, 400)  # Already there.


def test_crop_past_the_edge_fills_zeros_like_pil():
  image = (np.arange(16, dtype=np.uint8).reshape(4, 4) + 1)[..., None]
  image = np.repeat(image, 3, axis=-1)
  np.testing.assert_array_equal(tp.crop(image, 0, 0, 3)[..., 0],
                                [[1, 2, 3], [5, 6, 7], [9, 10, 11]])
  # Offset load - crop + 1 = 2: the last row and column lie outside.
  np.testing.assert_array_equal(tp.crop(image, 2, 2, 3)[..., 1],
                                [[11, 12, 0], [15, 16, 0], [0, 0, 0]])


def test_normalise_to_minus_one_one():
  out = tp.normalise([np.array([[[0, 255, 51]]], np.uint8)])
  assert out.shape == (1, 1, 1, 3) and out.dtype == np.float32
  np.testing.assert_array_equal(out[0, 0, 0, :2], [-1.0, 1.0])
  np.testing.assert_allclose(out[0, 0, 0, 2], -0.6, rtol=1e-6)


def _coded_element(size=6):
  """Every stored domain's pixel says its row, column and domain."""
  rows, cols = np.mgrid[:size, :size]
  images = [np.stack([rows * 20 + 10, cols * 20 + 10,
                      np.full_like(rows, 50 * k + 1)], -1).astype(np.uint8)
            for k in range(len(_STORED))]
  return {'images': images, 'name': b'x'}


def test_train_transform_official_offsets_and_one_flip_for_all():
  """load = crop = 6: offsets in {0, 1}, 1 being one pixel past the edge."""
  element = _coded_element()
  transform = tp.TrainTransform(_STORED, ('edge_texture', 'normal'), 'rgb',
                                load_size=6, crop_size=6)
  seen = set()
  for seed in range(40):
    out = transform.random_map(element, np.random.default_rng(seed))
    assert out['inputs'].shape == (2, 6, 6, 3)
    assert out['target'].shape == (6, 6, 3) and out['valid']
    # The documented draws: left, top, then the flip.
    rng = np.random.default_rng(seed)
    left, top = rng.integers(0, 2), rng.integers(0, 2)
    flip = rng.random() < 0.5
    for got, k in zip([*out['inputs'], out['target']], (4, 1, 0)):
      want = tp.crop(element['images'][k], top, left, 6)
      np.testing.assert_array_equal(got, _norm(want[:, ::-1] if flip
                                               else want))
    # Outside the image: 0, which is -1 after normalising.
    if top:
      np.testing.assert_array_equal(out['target'][-1], -1.0)
    if left:
      column = 0 if flip else -1
      np.testing.assert_array_equal(out['target'][:, column], -1.0)
    seen.add((int(top), int(left), bool(flip)))
  assert len(seen) == 8  # Every offset and flip occurs.


def test_train_transform_resizes_before_cropping():
  element = _coded_element(8)
  transform = tp.TrainTransform(_STORED, ('normal',), 'rgb', load_size=4,
                                crop_size=3)
  for seed in range(4):
    out = transform.random_map(element, np.random.default_rng(seed))
    assert out['inputs'].shape == (1, 3, 3, 3)
    rng = np.random.default_rng(seed)
    left, top = rng.integers(0, 3), rng.integers(0, 3)  # 4 - 3 + 1 included.
    want = tp.crop(tp.resize(element['images'][1], 4, 4), top, left, 3)
    if rng.random() < 0.5:
      want = want[:, ::-1]
    np.testing.assert_array_equal(out['inputs'][0], _norm(want))


def test_crop_larger_than_load_is_an_error():
  with pytest.raises(ValueError, match='crop_size 5 and load_size 4'):
    tp.TrainTransform(_STORED, ('normal',), 'rgb', load_size=4, crop_size=5)


def test_eval_transform_resizes_and_blanks_padding():
  element = _coded_element(8)
  transform = tp.EvalTransform(_STORED, ('reshading',), 'rgb', size=4)
  out = transform.map({**element, '_index': 5})
  assert out['index'] == 5
  np.testing.assert_array_equal(
      out['target'], _norm(tp.resize(element['images'][0], 4, 4)))
  np.testing.assert_array_equal(
      out['inputs'][0], _norm(tp.resize(element['images'][2], 4, 4)))
  assert out['valid']
  padded = transform.map({**element, '_padding': True, '_index': 6})
  assert not padded['valid']
  assert not padded['inputs'].any() and not padded['target'].any()


# Domain checks.


def test_domain_checks_name_the_problem(tiny_train):
  assert tp.domains(tiny_train) == _STORED
  assert tp.check_domains(tiny_train, ['reshading'], 'rgb') == (
      ('reshading',), 'rgb')
  cases = [
      ((('shade',), 'rgb'), r"unknown Taskonomy domain 'shade'.*'rgb'"),
      (((), 'rgb'), 'at least one input domain'),
      ((('rgb', 'normal'), 'rgb'), r"target 'rgb' is also an input"),
      ((('segment_unsup2d',), 'rgb'),
       r"no domain 'segment_unsup2d'; it stores \('rgb', 'normal'"),
      (('reshading', 'rgb'), 'sequence of domain names'),
  ]
  for (inputs, target), match in cases:
    with pytest.raises(ValueError, match=match):
      tp.train_loader(tiny_train, batch_size=2, seed=0, inputs=inputs,
                      target=target)


def test_get_source_unprepared_or_not_translation(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"data.prepare\('taskonomy'"):
    tp.get_source('taskonomy', 'train', data_dir=tmp_path)
  data.prepare('synthetic_rgbd/tiny', data_dir=tmp_path)
  rgbd = tp.get_source('synthetic_rgbd/tiny', 'train', data_dir=tmp_path)
  with pytest.raises(ValueError, match='records no domains'):
    tp.train_loader(rgbd, batch_size=1, seed=0)


# Loaders.


def _train(source, seed=0, **kwargs):
  return tp.train_loader(source, batch_size=4, seed=seed, load_size=40,
                         crop_size=40, **_IO, **kwargs)


def _candidates(source):
  """Every (record, top, left, flip) crop of the stored images, normalised."""
  out = []
  for i in range(len(source)):
    images = source[i]['images']
    for top in (0, 1):
      for left in (0, 1):
        crops = [_norm(tp.crop(x, top, left, 40)) for x in images]
        out.append(crops)
        out.append([c[:, ::-1] for c in crops])
  return out


def test_train_batches_crop_all_domains_of_one_record_alike(tiny_train):
  (batch,), _ = _take(_train(tiny_train), 1)
  assert batch['inputs'].shape == (4, 2, 40, 40, 3)
  assert batch['target'].shape == (4, 40, 40, 3)
  assert batch['inputs'].dtype == batch['target'].dtype == np.float32
  assert batch['valid'].dtype == np.bool_ and batch['valid'].all()
  assert batch['inputs'].min() >= -1 and batch['inputs'].max() <= 1
  candidates = _candidates(tiny_train)
  for inputs, target in zip(batch['inputs'], batch['target']):
    # The candidate whose reshading matches gives edges and RGB too.
    (match,) = [c for c in candidates if np.array_equal(c[2], inputs[0])]
    np.testing.assert_array_equal(inputs[1], match[4])
    np.testing.assert_array_equal(target, match[0])


def test_same_seed_same_batches(tiny_train):
  a, _ = _take(_train(tiny_train, seed=7), 5)  # Crosses an epoch (16).
  b, _ = _take(_train(tiny_train, seed=7), 5)
  _assert_batches_equal(a, b)
  c, _ = _take(_train(tiny_train, seed=8), 1)
  assert not np.array_equal(a[0]['target'], c[0]['target'])


def test_resume_gives_the_same_next_batches(tiny_train):
  _, it = _take(_train(tiny_train, seed=3), 3)
  state = it.get_state()
  expected, _ = _take(None, 2, it)
  fresh = iter(_train(tiny_train, seed=3))
  fresh.set_state(state)
  got, _ = _take(None, 2, fresh)
  _assert_batches_equal(expected, got)


def test_eval_every_example_once_in_order_with_padding(tiny_test):
  n = len(tiny_test)  # 8 examples.
  want = [[_norm(tiny_test[i]['images'][k]) for k in (2, 4, 0)]
          for i in range(n)]
  seen, valid, index = [], [], []
  for shard in range(2):
    batches = list(tp.eval_loader(tiny_test, batch_size=3, size=40,
                                  shard_index=shard, shard_count=2, **_IO))
    assert len(batches) == 2  # 8 examples padded to 2 x 2 x 3.
    for b in batches:
      assert b['inputs'].shape == (3, 2, 40, 40, 3)
      assert b['target'].shape == (3, 40, 40, 3)
      valid.append(b['valid'].tolist())
      index += b['index'].tolist()
      for x, y, v in zip(b['inputs'], b['target'], b['valid']):
        if v:
          seen.append([x[0], x[1], y])
        else:
          assert not x.any() and not y.any()
  assert valid == [[True] * 3, [True] * 3, [True, True, False], [False] * 3]
  assert index == list(range(12))  # Positions in the padded split.
  assert len(seen) == n
  for got, expected in zip(seen, want):  # In source order.
    for g, e in zip(got, expected):
      np.testing.assert_array_equal(g, e)


def test_eval_resizes_to_size(tiny_test):
  batch = next(iter(tp.eval_loader(tiny_test, batch_size=8, size=20,
                                   **_IO)))
  assert batch['inputs'].shape == (8, 2, 20, 20, 3)
  np.testing.assert_array_equal(
      batch['target'][5], _norm(tp.resize(tiny_test[5]['images'][0], 20, 20)))
