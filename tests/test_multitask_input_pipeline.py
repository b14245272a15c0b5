"""Known-answer tests of the multitask transforms, resizing and loaders."""

import types

import numpy as np
import pytest
import tensorflow_datasets as tfds

import data
from cen_jax.tasks.multitask import input_pipeline as ip
from cen_jax.training import loaders
from data import nyuv2_mtl

_MEAN = np.array([0.485, 0.456, 0.406])
_STD = np.array([0.229, 0.224, 0.225])


def _element(seed, h=6, w=8, index=0):
  """A decoded example with the multitask builders' features."""
  rng = np.random.default_rng(seed)
  normal = rng.normal(size=(h, w, 3)).astype(np.float32)
  normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
  normal[0, 0] = 0.0
  depth = rng.uniform(0.5, 10.0, (h, w)).astype(np.float32)
  depth[1, 1] = 0.0
  label = rng.integers(0, 13, (h, w)).astype(np.uint8)
  label[2, 2] = 255
  return {'image': rng.random((h, w, 3), dtype=np.float32), 'label': label,
          'depth': depth, 'normal': normal, 'index': np.int32(index),
          'name': f'train/{index}'.encode()}


def _ramp_sample(h, w):
  """Every array coded by ``4 * row + col`` (columns of a 4-wide ramp)."""
  ramp = (4 * np.arange(h)[:, None] + np.arange(w)).astype(np.float32)
  return {'image': np.stack([ramp, ramp + 1, ramp / 16], axis=-1),
          'label': ramp.astype(np.uint8),
          'depth': ramp + 1,
          'normal': np.stack([ramp, -ramp, np.ones_like(ramp)], axis=-1)}


class _ScriptedRng:
  """Returns the given draws in order and records the ``integers`` calls."""

  def __init__(self, integers, randoms):
    self._integers, self._randoms = list(integers), list(randoms)
    self.calls = []

  def integers(self, *args):
    self.calls.append(args)
    return self._integers.pop(0)

  def random(self):
    return self._randoms.pop(0)


def _assert_samples_equal(a, b):
  assert a.keys() == b.keys()
  for k in a:
    assert a[k].dtype == b[k].dtype, k
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


# Resizing.


def test_nearest_indices_legacy_floor():
  np.testing.assert_array_equal(ip.nearest_indices(3, 4), [0, 0, 1, 2])
  np.testing.assert_array_equal(ip.nearest_indices(4, 3), [0, 1, 2])
  np.testing.assert_array_equal(ip.nearest_indices(5, 3), [0, 1, 3])
  np.testing.assert_array_equal(ip.nearest_indices(2, 4), [0, 0, 1, 1])
  np.testing.assert_array_equal(ip.nearest_indices(4, 5), [0, 0, 1, 2, 3])
  np.testing.assert_array_equal(ip.nearest_indices(4, 4), [0, 1, 2, 3])
  # float32(2 / 82) < 1 / 41, so dst 41 reads 0 where exact arithmetic
  # gives 1 (as PyTorch computes it).
  idx = ip.nearest_indices(2, 82)
  assert (idx[41], idx[42]) == (0, 1)


def test_resize_nearest_keeps_values_and_dtype():
  x = np.arange(12, dtype=np.uint8).reshape(3, 4)
  out = ip.resize_nearest(x, 4, 3)
  assert out.dtype == np.uint8
  np.testing.assert_array_equal(out, [[0, 1, 2], [0, 1, 2], [4, 5, 6],
                                      [8, 9, 10]])


def test_resize_bilinear_align_corners_by_hand():
  x = np.array([[0.0, 1.0], [2.0, 3.0]], np.float32)
  out = ip.resize_bilinear(x, 3, 3)
  assert out.dtype == np.float32
  np.testing.assert_array_equal(out, [[0, 0.5, 1], [1, 1.5, 2], [2, 2.5, 3]])
  # Corners are kept; a single output row reads source row 0.
  y = np.arange(10, dtype=np.float32).reshape(2, 5)[..., None]
  np.testing.assert_array_equal(ip.resize_bilinear(y, 1, 3)[..., 0],
                                [[0, 2, 4]])


def test_scale_crop_by_hand_sc_1_5():
  sample = _ramp_sample(4, 4)
  # h = w = int(4 / 1.5) = 2: the window rows 1..2, cols 2..3 holds
  # [[6, 7], [10, 11]].
  out = ip.scale_crop(sample, 1.5, 1, 2)
  r, c = np.mgrid[0:4, 0:4]
  # Bilinear align_corners: src = dst / 3, and the ramp is linear.
  ramp = 6 + (4 * r + c) / 3
  np.testing.assert_allclose(out['image'][..., 0], ramp, rtol=1e-6)
  np.testing.assert_allclose(out['image'][..., 2], ramp / 16, rtol=1e-6)
  np.testing.assert_allclose(out['normal'][..., 1], -ramp, rtol=1e-6)
  np.testing.assert_array_equal(out['normal'][..., 2], 1.0)
  # Legacy nearest 2 -> 4 reads rows and columns 0, 0, 1, 1.
  nearest = np.array([[6, 6, 7, 7], [6, 6, 7, 7], [10, 10, 11, 11],
                      [10, 10, 11, 11]])
  np.testing.assert_array_equal(out['label'], nearest)
  assert out['label'].dtype == np.uint8
  np.testing.assert_array_equal(
      out['depth'], (nearest + 1).astype(np.float32) / np.float32(1.5))
  assert out['depth'].dtype == np.float32


def test_scale_crop_by_hand_sc_1_2():
  sample = _ramp_sample(5, 5)
  # int(5 / 1.2) = 4; nearest 4 -> 5 reads 0, 0, 1, 2, 3.
  out = ip.scale_crop(sample, 1.2, 0, 1)
  idx = np.array([0, 0, 1, 2, 3])
  want = 4 * idx[:, None] + (1 + idx)
  np.testing.assert_array_equal(out['label'], want)
  np.testing.assert_array_equal(
      out['depth'], (want + 1).astype(np.float32) / np.float32(1.2))
  assert out['image'].shape == (5, 5, 3) and out['normal'].shape == (5, 5, 3)


def test_scale_crop_at_scale_1_is_identity():
  sample = ip.select(_element(0))
  _assert_samples_equal(ip.scale_crop(sample, 1.0, 0, 0), sample)


def test_flip_mirrors_all_and_negates_normal_x():
  sample = _ramp_sample(2, 3)
  sample['normal'][0, 0] = 0.0
  before = {k: x.copy() for k, x in sample.items()}
  out = ip.flip(sample)
  _assert_samples_equal(sample, before)  # The input is untouched.
  for k in ('image', 'label', 'depth'):
    np.testing.assert_array_equal(out[k], sample[k][:, ::-1])
  np.testing.assert_array_equal(out['normal'][..., 0],
                                -sample['normal'][:, ::-1, 0])
  np.testing.assert_array_equal(out['normal'][..., 1:],
                                sample['normal'][:, ::-1, 1:])
  # A missing normal stays all zero.
  assert not np.any(out['normal'][0, 2] != 0)
  # Width 1: the flipped view shares memory; the input must still not change.
  narrow = {k: np.ascontiguousarray(x[:, :1]) for k, x in sample.items()}
  narrow['normal'][:] = (0.5, 0.5, 0.5)
  out = ip.flip(narrow)
  np.testing.assert_array_equal(narrow['normal'][..., 0], 0.5)
  np.testing.assert_array_equal(out['normal'][..., 0], -0.5)


def test_model_inputs_imagenet_rgb_and_tiled_depth():
  sample = {'image': np.float32([[[0.485, 0.456, 0.406], [1.0, 0.0, 0.5]]]),
            'depth': np.float32([[2.5, 0.0]])}
  out = ip.model_inputs(sample, ('depth', 'rgb'))
  assert out.shape == (2, 1, 2, 3) and out.dtype == np.float32
  np.testing.assert_array_equal(out[0, 0], [[2.5, 2.5, 2.5], [0, 0, 0]])
  np.testing.assert_allclose(out[1, 0, 0], 0.0, atol=1e-7)
  want = ((np.array([1.0, 0.0, 0.5]) - _MEAN) / _STD).astype(np.float32)
  np.testing.assert_array_equal(out[1, 0, 1], want)
  np.testing.assert_allclose(want, [2.2489083, -2.0357143, 0.4177778],
                             rtol=1e-6)
  assert ip.RGB_MEAN == tuple(_MEAN) and ip.RGB_STD == tuple(_STD)


@pytest.mark.parametrize('inputs, match', [
    (('rgb', 'thermal'), r"unknown input modality 'thermal'; choose from "
                         r"\('rgb', 'depth', 'hha'\)"),
    ((), 'at least one'),
    ('rgb', 'sequence of names'),
])
def test_unknown_inputs_name_the_choices(inputs, match):
  with pytest.raises(ValueError, match=match):
    ip.check_inputs(inputs)
  with pytest.raises(ValueError, match=match):
    ip.train_loader([_element(0)], inputs=inputs, batch_size=1, seed=0)
  with pytest.raises(ValueError, match=match):
    ip.eval_loader([_element(0)], inputs=inputs, batch_size=1)


def test_source_without_multitask_features():
  info = types.SimpleNamespace(full_name='nyud_v2/default/1.0.0',
                               features={'rgb': 0, 'depth': 0, 'label': 0})
  source = types.SimpleNamespace(dataset_info=info)
  # A CEN-layout source needs the normals fitted at build time.
  with pytest.raises(ValueError, match=r"nyud_v2.*no feature \['normal'\].*"
                     r"nyud_v2/normals"):
    ip.eval_loader(source, inputs=('rgb',), batch_size=1)
  info.features = {'image': 0, 'label': 0}
  with pytest.raises(ValueError, match=r"no feature \['depth', 'normal'\]"):
    ip.eval_loader(source, inputs=('rgb',), batch_size=1)


# Transforms.


def test_train_transform_draws_in_order():
  element = _element(3, h=6, w=8)
  # sc = SCALES[2] = 1.5 -> h, w = 4, 5; i = 1, j = 3; flip; crop (3, 2) at
  # top 2, left 6.
  rng = _ScriptedRng([2, 1, 3, 2, 6], [0.25])
  transform = ip.TrainTransform(('rgb', 'depth'), crop_size=(3, 2))
  out = transform.random_map(element, rng)
  assert rng.calls == [(3,), (0, 3), (0, 4), (0, 4), (0, 7)]
  sample = ip.flip(ip.scale_crop(ip.select(element), 1.5, 1, 3))
  sample = ip.crop(sample, 2, 6, 3, 2)
  want = ip.to_example(sample, ('rgb', 'depth'))
  _assert_samples_equal(out, want)
  assert out['inputs'].shape == (2, 3, 2, 3)
  # random() >= 0.5: no flip, no crop.
  rng = _ScriptedRng([0, 0, 0], [0.5])
  out = ip.TrainTransform(('depth',)).random_map(element, rng)
  _assert_samples_equal(out, ip.to_example(ip.select(element), ('depth',)))


def test_train_transform_without_augmentation_draws_only_the_crop():
  element = _element(3, h=6, w=8)
  rng = _ScriptedRng([2, 6], [])
  transform = ip.TrainTransform(('rgb', 'depth'), crop_size=(3, 2),
                                augment=False)
  out = transform.random_map(element, rng)
  assert rng.calls == [(0, 4), (0, 7)]
  want = ip.to_example(ip.crop(ip.select(element), 2, 6, 3, 2),
                       ('rgb', 'depth'))
  _assert_samples_equal(out, want)
  # No crop either: the example as stored.
  out = ip.TrainTransform(('rgb',), augment=False).random_map(
      element, _ScriptedRng([], []))
  _assert_samples_equal(out, ip.to_example(ip.select(element), ('rgb',)))


def test_train_transform_crop_checks():
  with pytest.raises(ValueError, match='crop_size must be'):
    ip.TrainTransform(('rgb',), crop_size=(0, 2))
  with pytest.raises(ValueError, match='scales must be >= 1'):
    ip.TrainTransform(('rgb',), scales=(0.5, 1.0))
  transform = ip.TrainTransform(('rgb',), crop_size=7)
  with pytest.raises(ValueError, match=r'larger than the 6x8 image'):
    transform.random_map(_element(0), np.random.default_rng(0))


def test_train_transform_labels_and_depths_come_from_the_source():
  element = _element(4)
  transform = ip.TrainTransform(('rgb', 'depth'))
  for seed in range(8):
    out = transform.random_map(element, np.random.default_rng(seed))
    assert set(np.unique(out['label'])) <= set(np.unique(element['label']))
    candidates = np.concatenate(
        [element['depth'].ravel() / np.float32(s) for s in ip.SCALES])
    assert np.isin(out['depth'], candidates).all()
    np.testing.assert_array_equal(out['inputs'][1, ..., 0], out['depth'])
    assert out['valid']


# Loaders.


def test_eval_loader_pads_with_blank_invalid_examples():
  source = [_element(i, index=i) for i in range(3)]
  batches = list(ip.eval_loader(source, inputs=('rgb', 'depth'),
                                batch_size=2))
  assert len(batches) == 2
  b = batches[1]
  assert b['inputs'].shape == (2, 2, 6, 8, 3)
  assert b['inputs'].dtype == np.float32
  assert b['label'].shape == (2, 6, 8) and b['label'].dtype == np.int32
  assert b['depth'].shape == (2, 6, 8) and b['depth'].dtype == np.float32
  assert b['normal'].shape == (2, 6, 8, 3)
  assert b['normal'].dtype == np.float32
  np.testing.assert_array_equal(b['valid'], [True, False])
  np.testing.assert_array_equal(b['inputs'][1], 0.0)
  np.testing.assert_array_equal(b['label'][1], 255)
  np.testing.assert_array_equal(b['depth'][1], 0.0)
  np.testing.assert_array_equal(b['normal'][1], 0.0)
  # Real examples unchanged, in source order.
  for k, element in enumerate(source):
    got = {key: x[k % 2] for key, x in batches[k // 2].items()}
    _assert_samples_equal(got, ip.to_example(ip.select(element),
                                             ('rgb', 'depth')))
  np.testing.assert_array_equal(batches[0]['label'][0, 2, 2], 255)


def _first_batches(seed, n=3):
  source = [_element(i, index=i) for i in range(5)]
  it = iter(ip.train_loader(source, inputs=('depth', 'rgb'), batch_size=2,
                            seed=seed))
  return [next(it) for _ in range(n)]


def test_train_loader_shapes_and_determinism():
  a, b, c = _first_batches(0), _first_batches(0), _first_batches(1)
  for x, y in zip(a, b):
    _assert_samples_equal(x, y)
  assert any(not np.array_equal(x['inputs'], y['inputs'])
             for x, y in zip(a, c))
  batch = a[0]
  assert batch['inputs'].shape == (2, 2, 6, 8, 3)
  assert batch['inputs'].dtype == np.float32
  assert batch['label'].shape == (2, 6, 8) and batch['label'].dtype == np.int32
  assert batch['depth'].shape == (2, 6, 8)
  assert batch['normal'].shape == (2, 6, 8, 3)
  assert batch['valid'].dtype == np.bool_ and batch['valid'].all()
  # Depth comes first in the inputs, tiled.
  np.testing.assert_array_equal(batch['inputs'][:, 0, ..., 2],
                                batch['depth'])


def test_train_loader_crop_size():
  source = [_element(i) for i in range(2)]
  batch = next(iter(ip.train_loader(source, inputs=('rgb',), batch_size=2,
                                    seed=0, crop_size=(4, 3))))
  assert batch['inputs'].shape == (2, 1, 4, 3, 3)
  assert batch['normal'].shape == (2, 4, 3, 3)


# Sources.


def test_get_source_generates_synthetic_mtl_only(monkeypatch, tmp_path):
  prepared, opened = [], []
  monkeypatch.setattr(data, 'prepare', lambda name, data_dir: prepared.append(
      (name, data_dir)))
  monkeypatch.setattr(loaders, 'prepared_source',
                      lambda name, split, data_dir: opened.append(
                          (name, split)) or 'source')
  assert ip.get_source('synthetic_mtl/tiny', 'train',
                       data_dir=tmp_path) == 'source'
  assert ip.get_source('nyuv2_mtl', 'test', data_dir=tmp_path) == 'source'
  assert prepared == [('synthetic_mtl/tiny', tmp_path)]
  assert opened == [('synthetic_mtl/tiny', 'train'), ('nyuv2_mtl', 'test')]


def test_get_source_nyuv2_mtl_not_prepared(tmp_path):
  with pytest.raises(FileNotFoundError, match='nyuv2_mtl'):
    ip.get_source('nyuv2_mtl', 'train', data_dir=tmp_path)


def test_nyuv2_mtl_source_end_to_end(tmp_path):
  manual = tmp_path / 'manual'
  rng = np.random.default_rng(0)
  for folder in ('train', 'val'):
    for task, shape in (('image', (6, 8, 3)), ('label', (6, 8)),
                        ('depth', (6, 8, 1)), ('normal', (6, 8, 3))):
      (manual / folder / task).mkdir(parents=True)
      x = rng.random(shape, dtype=np.float32)
      if task == 'label':
        x = np.floor(x * 14) - 1  # -1 (ignore) .. 12.
      np.save(manual / folder / task / '0.npy', x)
  nyuv2_mtl.Nyuv2Mtl(data_dir=str(tmp_path / 'tfds'),
                     file_format='array_record').download_and_prepare(
                         download_config=tfds.download.DownloadConfig(
                             manual_dir=str(manual), try_download_gcs=False))
  source = ip.get_source('nyuv2_mtl', 'test', data_dir=tmp_path / 'tfds')
  assert ip.class_names(source) == nyuv2_mtl.CLASS_NAMES
  (batch,) = list(ip.eval_loader(source, inputs=('rgb', 'depth'),
                                 batch_size=1))
  raw = np.load(manual / 'val' / 'depth' / '0.npy')[..., 0]
  np.testing.assert_array_equal(batch['depth'][0], raw)
  np.testing.assert_array_equal(batch['inputs'][0, 1, ..., 1], raw)
  assert batch['valid'].tolist() == [True]


# PyTorch parity (F.interpolate and MTAN's RandomScaleCrop).


def _torch_scale_crop(sample, sc, i, j, flip):
  """MTAN's RandomScaleCrop and flip with given draws, channels first."""
  torch = pytest.importorskip('torch')
  f = torch.nn.functional
  img = torch.from_numpy(np.moveaxis(sample['image'], -1, 0))
  label = torch.from_numpy(sample['label'].astype(np.float32))
  depth = torch.from_numpy(sample['depth'][None])
  normal = torch.from_numpy(np.moveaxis(sample['normal'], -1, 0))
  height, width = img.shape[-2:]
  h, w = int(height / sc), int(width / sc)
  size = (height, width)
  img_ = f.interpolate(img[None, :, i:i + h, j:j + w], size=size,
                       mode='bilinear', align_corners=True).squeeze(0)
  label_ = f.interpolate(label[None, None, i:i + h, j:j + w], size=size,
                         mode='nearest').squeeze(0).squeeze(0)
  depth_ = f.interpolate(depth[None, :, i:i + h, j:j + w], size=size,
                         mode='nearest').squeeze(0)
  normal_ = f.interpolate(normal[None, :, i:i + h, j:j + w], size=size,
                          mode='bilinear', align_corners=True).squeeze(0)
  depth_ = depth_ / sc
  if flip:
    img_ = torch.flip(img_, dims=[2])
    label_ = torch.flip(label_, dims=[1])
    depth_ = torch.flip(depth_, dims=[2])
    normal_ = torch.flip(normal_, dims=[2])
    normal_[0, :, :] = -normal_[0, :, :]
  return {'image': np.moveaxis(img_.numpy(), 0, -1),
          'label': label_.numpy().astype(np.uint8),
          'depth': depth_.numpy()[0],
          'normal': np.moveaxis(normal_.numpy(), 0, -1)}


def test_resize_matches_torch_interpolate():
  torch = pytest.importorskip('torch')
  f = torch.nn.functional
  rng = np.random.default_rng(0)
  for (h, w), (oh, ow) in [((7, 9), (12, 5)), ((240, 320), (288, 384)),
                           ((2, 3), (82, 94)), ((5, 4), (1, 1))]:
    x = rng.normal(size=(h, w, 3)).astype(np.float32)
    t = torch.from_numpy(np.moveaxis(x, -1, 0))[None]
    want = np.moveaxis(f.interpolate(t, size=(oh, ow), mode='bilinear',
                                     align_corners=True)[0].numpy(), 0, -1)
    np.testing.assert_allclose(ip.resize_bilinear(x, oh, ow), want,
                               rtol=1e-6, atol=1e-6)
    want = np.moveaxis(f.interpolate(t, size=(oh, ow),
                                     mode='nearest')[0].numpy(), 0, -1)
    np.testing.assert_array_equal(ip.resize_nearest(x, oh, ow), want)


@pytest.mark.parametrize('sc, i, j, flip', [(1.0, 0, 0, True),
                                            (1.2, 3, 0, False),
                                            (1.5, 20, 27, True)])
def test_scale_crop_and_flip_match_mtan(sc, i, j, flip):
  sample = ip.select(_element(7, h=60, w=80))
  want = _torch_scale_crop(sample, sc, i, j, flip)
  got = ip.scale_crop(sample, sc, i, j)
  if flip:
    got = ip.flip(got)
  for k in ('label', 'depth'):
    np.testing.assert_array_equal(got[k], want[k], err_msg=k)
  for k in ('image', 'normal'):
    np.testing.assert_allclose(got[k], want[k], rtol=1e-6, atol=1e-6,
                               err_msg=k)
