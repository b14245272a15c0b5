"""Known-answer tests of the official transforms and the grain loaders."""

from absl import flags
import cv2
import numpy as np
from PIL import Image
import pytest

import data
from cen_jax.tasks.segmentation import input_pipeline as ip
from cen_jax.training import loaders
from tests import paths

_MEAN = np.array([0.485, 0.456, 0.406])
_STD = np.array([0.229, 0.224, 0.225])


@pytest.fixture(scope='module')
def tiny_dir(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp('tiny')
  data.prepare('synthetic_rgbd/tiny', data_dir=data_dir)
  return data_dir


@pytest.fixture(scope='module')
def tiny_train(tiny_dir):
  return ip.get_source('synthetic_rgbd/tiny', 'train', data_dir=tiny_dir)


@pytest.fixture(scope='module')
def tiny_test(tiny_dir):
  return ip.get_source('synthetic_rgbd/tiny', 'test', data_dir=tiny_dir)


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


def test_align_to_mask_official_offsets():
  frame = np.arange(480 * 640).reshape(480, 640)
  out = ip.align_to_mask(frame, (468, 625))
  np.testing.assert_array_equal(out, frame[6:474, 7:632])
  small = np.arange(25).reshape(5, 5)
  # Odd difference: the extra pixel is dropped at the bottom/right.
  np.testing.assert_array_equal(ip.align_to_mask(small, (2, 3)),
                                small[1:3, 1:4])
  with pytest.raises(ValueError, match='smaller than its mask'):
    ip.align_to_mask(small, (6, 5))


def test_scale_rule_shorter_side_350():
  assert ip.scale_factor((468, 625), 0.5, 350) == 350 / 468
  assert ip.scale_factor((468, 625), 0.8, 350) == 0.8  # 374.4 >= 350.
  assert ip.scale_factor((468, 625), 1.7, 350) == 1.7
  sample = {'rgb': np.zeros((468, 625, 3), np.uint8),
            'depth': np.zeros((468, 625, 3), np.uint16),
            'label': np.zeros((468, 625), np.uint8)}
  out = ip.resize(sample, ip.scale_factor((468, 625), 0.5, 350))
  assert out['label'].shape == (350, 467)
  assert out['rgb'].shape == (350, 467, 3)
  assert out['depth'].shape == (350, 467, 3)


def test_resize_bicubic_rgb_nearest_depth_and_label():
  rng = np.random.default_rng(0)
  rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
  depth = np.repeat(rng.integers(1, 9, (20, 30, 1), dtype=np.uint16) * 1000,
                    3, axis=-1)
  label = rng.integers(0, 4, (20, 30), dtype=np.uint8)
  out = ip.resize({'rgb': rgb, 'depth': depth, 'hha': rgb, 'label': label},
                  1.37)
  for key in ('rgb', 'hha'):
    np.testing.assert_array_equal(
        out[key], cv2.resize(rgb, None, fx=1.37, fy=1.37,
                             interpolation=cv2.INTER_CUBIC))
  assert set(np.unique(out['depth'])) <= set(np.unique(depth))
  assert set(np.unique(out['label'])) <= set(np.unique(label))
  np.testing.assert_array_equal(
      out['label'], cv2.resize(label, None, fx=1.37, fy=1.37,
                               interpolation=cv2.INTER_NEAREST))


def test_pad_values_and_symmetric_overshoot():
  sample = {'rgb': np.full((3, 4, 3), 9, np.uint8),
            'depth': np.full((3, 4, 3), 7000, np.uint16),
            'label': np.full((3, 4), 1, np.uint8)}
  out = ip.pad(sample, 8)
  # ceil((8 - 3) / 2) = 3 rows each side (9 > 8), ceil((8 - 4) / 2) = 2.
  assert out['label'].shape == (9, 8)
  np.testing.assert_array_equal(out['label'][3:6, 2:6], 1)
  assert (out['label'] == 255).sum() == 9 * 8 - 12
  for key in ('rgb', 'depth'):
    # 123.675, 116.28, 103.53 written into integer arrays, as officially.
    np.testing.assert_array_equal(out[key][0, 0], [123, 116, 103])
    np.testing.assert_array_equal(out[key][8, 7], [123, 116, 103])
    assert out[key].dtype == sample[key].dtype
  np.testing.assert_array_equal(out['depth'][3:6, 2:6], 7000)
  norm = ip.normalise(out, ('rgb', 'depth'))
  np.testing.assert_allclose(norm[1, 0, 0], np.array([123, 116, 103]) / 5000,
                             rtol=1e-6)
  assert ip.pad(out, 8)['label'].shape == (9, 8)  # Never negative.


def test_normalise_depth_scale_and_imagenet_rgb():
  sample = {'rgb': np.array([[[0, 255, 51]]], np.uint8),
            'hha': np.array([[[0, 255, 51]]], np.uint8),
            'depth': np.array([[[5000, 12345, 0]]], np.uint16)}
  out = ip.normalise(sample, ('depth', 'rgb', 'hha'))
  assert out.shape == (3, 1, 1, 3) and out.dtype == np.float32
  np.testing.assert_array_equal(out[0, 0, 0], np.float32([1.0, 2.469, 0.0]))
  expected = ((np.array([0, 255, 51]) / 255 - _MEAN) / _STD).astype(
      np.float32)
  np.testing.assert_array_equal(out[1, 0, 0], expected)
  np.testing.assert_array_equal(out[2, 0, 0], expected)


def _column_coded_element(size=16):
  cols = np.arange(size)
  rgb = np.broadcast_to(cols[None, :, None], (size, size, 3)).astype(np.uint8)
  return {'rgb': rgb, 'hha': rgb + 1,
          'depth': np.broadcast_to(cols * 10, (size, size)).astype(np.uint16),
          'label': np.broadcast_to(cols % 7, (size, size)).astype(np.uint8)}


def test_flip_moves_all_modalities_with_the_mask():
  element = _column_coded_element()
  transform = ip.TrainTransform(('rgb', 'depth', 'hha'), crop_size=16,
                                scale_range=(1.0, 1.0), shorter_side=1)
  flipped = 0
  for seed in range(12):
    out = transform.random_map(element, np.random.default_rng(seed))
    cols = np.round((out['inputs'][0, ..., 0] * _STD[0] + _MEAN[0]) * 255)
    depth_cols = np.round(out['inputs'][1, ..., 0] * 5000 / 10)
    hha_cols = np.round((out['inputs'][2, ..., 0] * _STD[0] + _MEAN[0])
                        * 255) - 1
    np.testing.assert_array_equal(depth_cols, cols)
    np.testing.assert_array_equal(hha_cols, cols)
    np.testing.assert_array_equal(out['label'], cols.astype(int) % 7)
    if cols[0, 0] == 15:
      flipped += 1
      np.testing.assert_array_equal(cols[0], np.arange(16)[::-1])
    else:
      np.testing.assert_array_equal(cols[0], np.arange(16))
  assert 0 < flipped < 12


def test_train_transform_output_contract_and_even_crop():
  element = _column_coded_element(20)
  out = ip.TrainTransform(('depth', 'rgb'), crop_size=33,
                          scale_range=(0.5, 2.0), shorter_side=10
                          ).random_map(element, np.random.default_rng(3))
  assert out['inputs'].shape == (2, 32, 32, 3)  # 33 forced even.
  assert out['inputs'].dtype == np.float32
  assert out['label'].shape == (32, 32) and out['label'].dtype == np.int32
  assert out['valid'] == np.True_
  # Modality order follows `modalities`: depth first, its channels agree
  # except where padded with the per-channel constants.
  d = out['inputs'][0]
  body = out['label'] != 255
  np.testing.assert_array_equal(d[body][:, 0], d[body][:, 2])


def test_eval_on_real_frame_crops_like_official(tmp_path):
  """A CEN-style 468x625 mask with the full 480x640 depth."""
  manual = tmp_path / 'manual'
  for sub in ('rgb', 'depth', 'masks'):
    (manual / sub).mkdir(parents=True)
  s = paths.NYUD_SAMPLES
  rgb = np.asarray(Image.open(s / 'rgb' / '000433.png'))
  label = np.asarray(Image.open(s / 'label' / '000433.png'))
  depth = cv2.imread(str(s / 'depth' / '000433.png'), cv2.IMREAD_UNCHANGED)
  crop = (slice(6, 474), slice(7, 632))
  Image.fromarray(rgb[crop]).save(manual / 'rgb' / '000433.png')
  Image.fromarray(label[crop]).save(manual / 'masks' / '000433.png')
  (manual / 'depth' / '000433.png').symlink_to(s / 'depth' / '000433.png')
  line = 'rgb/000433.png\tmasks/000433.png\tdepth/000433.png'
  for name in ('train.txt', 'val.txt'):
    (manual / name).write_text(line)
  data.prepare('nyud_v2', data_dir=tmp_path / 'tfds', manual_dir=manual)
  src = ip.get_source('nyud_v2', 'test', data_dir=tmp_path / 'tfds')
  (batch,) = list(ip.eval_loader(src, batch_size=1))
  np.testing.assert_array_equal(batch['label'][0], label[crop])
  np.testing.assert_array_equal(
      batch['inputs'][0, 1], (np.repeat(depth[crop][..., None], 3, -1)
                              * (1 / 5000)).astype(np.float32))
  np.testing.assert_allclose(batch['inputs'][0, 0],
                             (rgb[crop] / 255 - _MEAN) / _STD, rtol=1e-6)
  with pytest.raises(ValueError, match=r"has no feature \['hha'\]"):
    ip.eval_loader(src, batch_size=1, modalities=('rgb', 'hha'))


# Loaders.


def _train(source, seed=0, **kwargs):
  return ip.train_loader(source, batch_size=4, seed=seed,
                         modalities=('rgb', 'depth', 'hha'), crop_size=32,
                         shorter_side=20, **kwargs)


def test_train_batch_contract(tiny_train):
  (batch,), _ = _take(_train(tiny_train), 1)
  assert batch['inputs'].shape == (4, 3, 32, 32, 3)
  assert batch['inputs'].dtype == np.float32
  assert batch['label'].shape == (4, 32, 32)
  assert batch['label'].dtype == np.int32
  assert batch['valid'].dtype == np.bool_ and batch['valid'].all()
  assert set(np.unique(batch['label'])) <= set(range(7)) | {255}


def test_same_seed_same_batches(tiny_train):
  a, _ = _take(_train(tiny_train, seed=7), 5)  # Crosses an epoch (16).
  b, _ = _take(_train(tiny_train, seed=7), 5)
  _assert_batches_equal(a, b)
  c, _ = _take(_train(tiny_train, seed=8), 1)
  assert not np.array_equal(a[0]['inputs'], c[0]['inputs'])


def test_resume_continues_with_the_same_batches(tiny_train):
  _, it = _take(_train(tiny_train, seed=3), 3)
  state = it.get_state()
  expected, _ = _take(None, 2, it)
  fresh = iter(_train(tiny_train, seed=3))
  fresh.set_state(state)
  got, _ = _take(None, 2, fresh)
  _assert_batches_equal(expected, got)


def test_shards_split_the_records(tiny_train):
  first = []
  for shard in range(2):
    loader = ip.train_loader(tiny_train, batch_size=8, seed=0,
                             modalities=('rgb',), crop_size=32,
                             scale_range=(1.0, 1.0), shorter_side=1,
                             shard_index=shard, shard_count=2)
    (batch,), _ = _take(loader, 1)
    first.append(batch)
  # One epoch of each shard (8 records) holds 8 distinct images, and the
  # two shards together hold the 16 images of the split, up to flips.
  def key(x):
    return min(x.tobytes(), x[:, ::-1].tobytes())
  keys = [{key(x) for x in b['inputs'][:, 0]} for b in first]
  assert len(keys[0]) == len(keys[1]) == 8 and not keys[0] & keys[1]


def test_multiprocess_worker_gives_the_same_batches(tiny_train):
  if not flags.FLAGS.is_parsed():  # Grain workers read absl flags.
    flags.FLAGS.mark_as_parsed()
  a, _ = _take(_train(tiny_train, seed=5), 3)
  loader = _train(tiny_train, seed=5, worker_count=1)
  b, it = _take(loader, 2)
  state = it.get_state()
  b += _take(None, 1, it)[0]
  _assert_batches_equal(a, b)
  fresh = iter(_train(tiny_train, seed=5, worker_count=1))
  fresh.set_state(state)
  _assert_batches_equal(a[2:], _take(None, 1, fresh)[0])
  del it, fresh


def test_eval_covers_every_example_once_with_padding(tiny_test):
  n = len(tiny_test)  # 8 examples.
  labels = [tiny_test[i]['label'].astype(np.int32) for i in range(n)]
  assert loaders.num_eval_batches(n, 3, 2) == 2
  seen = []
  for shard in range(2):
    batches = list(ip.eval_loader(tiny_test, batch_size=3,
                                  modalities=('depth',), shard_index=shard,
                                  shard_count=2))
    assert len(batches) == 2
    for b in batches:
      assert b['inputs'].shape == (3, 1, 32, 32, 3)
      for x, y, v in zip(b['inputs'], b['label'], b['valid']):
        if v:
          seen.append(y)
        else:
          assert (y == 255).all() and (x == 0).all()
  valid_pattern = [b['valid'].tolist() for b in batches]
  assert valid_pattern == [[True, True, False], [False, False, False]]
  assert len(seen) == n
  for got, want in zip(seen, labels):  # In source order.
    np.testing.assert_array_equal(got, want)


def test_unknown_modality_lists_choices(tiny_train):
  with pytest.raises(ValueError, match=r"'ir'.*\('rgb', 'depth', 'hha'\)"):
    ip.train_loader(tiny_train, batch_size=2, seed=0, modalities=('ir',))


def test_get_source_unprepared_dataset(tmp_path):
  with pytest.raises(FileNotFoundError, match='data.prepare'):
    ip.get_source('nyud_v2', 'train', data_dir=tmp_path)
  with pytest.raises(FileNotFoundError, match='data.prepare'):
    ip.get_source('rgbd_folder/mine', 'train', data_dir=tmp_path)


def test_class_names(tiny_train):
  assert ip.class_names(tiny_train)[:2] == ('floor', 'wall')
