"""The nyuv2_mtl builder on tiny generated folders in MTAN's .npy layout."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from data import nyuv2_mtl

_H, _W = 12, 16


def _arrays(seed, label_dtype=np.float32):
  """One image's four arrays as MTAN stores them, with missing pixels."""
  rng = np.random.default_rng(seed)
  label = rng.integers(-1, 13, (_H, _W)).astype(label_dtype)
  label[0, :3] = (-1, 0, 12)
  depth = rng.uniform(0.5, 10.0, (_H, _W, 1)).astype(np.float32)
  depth[1, :4] = 0.0
  normal = rng.normal(size=(_H, _W, 3)).astype(np.float32)
  normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
  normal[2, :5] = 0.0
  image = rng.random((_H, _W, 3), dtype=np.float32)
  image[0, 0] = (0.0, 1.0, 0.5)
  return {'image': image, 'label': label, 'depth': depth, 'normal': normal}


def _write(manual, train=3, val=2):
  """An MTAN-layout folder; returns {(folder, i): arrays}."""
  arrays = {}
  for split_dir, count in (('train', train), ('val', val)):
    for i in range(count):
      seed = (0 if split_dir == 'train' else 100) + i
      # MTAN's label files are float; check float64 ones too.
      arrays[split_dir, i] = _arrays(
          seed, np.float32 if split_dir == 'train' else np.float64)
      for task, array in arrays[split_dir, i].items():
        _save(manual / split_dir / task / f'{i}.npy', array)
  return arrays


def _save(path, array):
  path.parent.mkdir(parents=True, exist_ok=True)
  np.save(path, array)


def _build(tmp_path, manual):
  builder = nyuv2_mtl.Nyuv2Mtl(data_dir=str(tmp_path / 'tfds'),
                               file_format='array_record')
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=str(manual), try_download_gcs=False))
  return builder


def _build_error(tmp_path, manual, error, match):
  with pytest.raises(error, match=match):
    _build(tmp_path, manual)


def _source(tmp_path, split):
  return tfds.data_source('nyuv2_mtl', split=split,
                          data_dir=tmp_path / 'tfds', download=False)


@pytest.fixture
def manual(tmp_path):
  root = tmp_path / 'manual'
  _write(root)
  return root


def test_class_names_are_nyuv2_13_in_standard_order():
  assert nyuv2_mtl.CLASS_NAMES == (
      'bed', 'books', 'ceiling', 'chair', 'floor', 'furniture', 'objects',
      'picture', 'sofa', 'table', 'tv', 'wall', 'window')
  assert nyuv2_mtl.NUM_CLASSES == 13


def test_convert_label_maps_ignore_to_255():
  raw = np.array([[-1.0, 0.0, 12.0], [5.0, -1.0, 1.0]])
  np.testing.assert_array_equal(nyuv2_mtl.convert_label(raw, 'l.npy'),
                                [[255, 0, 12], [5, 255, 1]])
  out = nyuv2_mtl.convert_label(np.array([[-1, 3]], np.int16), 'l.npy')
  assert out.dtype == np.uint8
  np.testing.assert_array_equal(out, [[255, 3]])


def test_builds_arrays_bit_for_bit(tmp_path):
  manual = tmp_path / 'manual'
  arrays = _write(manual)
  builder = _build(tmp_path, manual)
  assert builder.name == 'nyuv2_mtl'
  assert builder.info.splits['train'].num_examples == 3
  assert builder.info.splits['test'].num_examples == 2
  for split, split_dir in (('train', 'train'), ('test', 'val')):
    source = _source(tmp_path, split)
    for i in range(len(source)):  # File-number order.
      example, want = source[i], arrays[split_dir, i]
      assert example['index'] == i
      assert example['name'].decode() == f'{split_dir}/{i}'
      assert example['image'].dtype == np.float32
      np.testing.assert_array_equal(example['image'], want['image'])
      assert example['depth'].shape == (_H, _W)
      np.testing.assert_array_equal(example['depth'], want['depth'][..., 0])
      np.testing.assert_array_equal(example['normal'], want['normal'])
      label = example['label']
      assert label.dtype == np.uint8
      np.testing.assert_array_equal(label[0, :3], [255, 0, 12])
      raw = want['label']
      np.testing.assert_array_equal(label[raw == -1], 255)
      np.testing.assert_array_equal(label[raw >= 0], raw[raw >= 0])
      # Missing depth and normals stay zero.
      np.testing.assert_array_equal(example['depth'][1, :4], 0.0)
      np.testing.assert_array_equal(example['normal'][2, :5], 0.0)


def test_metadata(tmp_path, manual):
  _build(tmp_path, manual)
  metadata = _source(tmp_path, 'train').dataset_info.metadata
  assert metadata['class_names'] == list(nyuv2_mtl.CLASS_NAMES)
  assert metadata['num_classes'] == 13
  assert metadata['ignore_label'] == 255
  assert 'depth 0' in metadata['missing']
  assert '(0, 0, 0)' in metadata['missing']


# Errors in the folder structure, found before any array is read.


def test_missing_split_folder(tmp_path):
  manual = tmp_path / 'manual'
  _write(manual, val=0)
  _build_error(tmp_path, manual, FileNotFoundError,
               f'{manual / "val"}: split folder not found')


@pytest.mark.parametrize('task', nyuv2_mtl.TASK_DIRS)
def test_missing_task_folder(tmp_path, manual, task):
  for path in (manual / 'val' / task).iterdir():
    path.unlink()
  (manual / 'val' / task).rmdir()
  _build_error(tmp_path, manual, FileNotFoundError,
               f'{manual / "val" / task}: task folder not found')


def test_file_missing_in_one_task_folder(tmp_path, manual):
  (manual / 'train' / 'depth' / '1.npy').unlink()
  _build_error(
      tmp_path, manual, FileNotFoundError,
      f'{manual / "train" / "depth" / "1.npy"}: missing, but '
      f'{manual / "train" / "image" / "1.npy"} exists')


def test_gap_in_file_numbers(tmp_path, manual):
  for task in nyuv2_mtl.TASK_DIRS:
    (manual / 'train' / task / '1.npy').unlink()
  _build_error(tmp_path, manual, nyuv2_mtl.DataError,
               f'{manual / "train" / "image" / "1.npy"}: missing; files '
               'must be numbered 0.npy .. N-1.npy without gaps')


def test_split_without_files(tmp_path, manual):
  for task in nyuv2_mtl.TASK_DIRS:
    for path in (manual / 'val' / task).iterdir():
      path.unlink()
  _build_error(tmp_path, manual, nyuv2_mtl.DataError,
               f'{manual / "val" / "image"}: no .npy files')


@pytest.mark.parametrize('name', ['a.npy', '01.npy', '1.5.npy'])
def test_file_name_not_an_integer(tmp_path, manual, name):
  path = manual / 'val' / 'label' / name
  _save(path, np.zeros((_H, _W), np.float32))
  _build_error(tmp_path, manual, nyuv2_mtl.DataError,
               f'{path}: file name is not a plain integer')


# Errors in one example's arrays.


def test_unreadable_npy(tmp_path, manual):
  path = manual / 'train' / 'normal' / '2.npy'
  path.write_bytes(b'not an array')
  _build_error(tmp_path, manual, nyuv2_mtl.DataError,
               f'{path}: unreadable .npy file')


@pytest.mark.parametrize('task, shape, match', [
    ('image', (_H, _W), r'image must be \(H, W, 3\).*\(12, 16\)'),
    ('image', (3, _H, _W),
     r'image must.*\(3, 12, 16\); it looks channels-first'),
    ('label', (_H, _W, 1), r'label must be \(H, W\).*\(12, 16, 1\)'),
    ('depth', (_H, _W), r'depth must be \(H, W, 1\).*\(12, 16\)'),
    ('normal', (_H, _W, 2), r'normal must be \(H, W, 3\).*\(12, 16, 2\)'),
])
def test_wrong_shape(tmp_path, manual, task, shape, match):
  path = manual / 'train' / task / '1.npy'
  _save(path, np.zeros(shape, np.float32))
  _build_error(tmp_path, manual, nyuv2_mtl.DataError,
               f'{path}: {match}')


@pytest.mark.parametrize('task, shape', [
    ('label', (_H, _W + 1)),
    ('depth', (_H - 1, _W, 1)),
    ('normal', (_H, _W - 2, 3)),
])
def test_sizes_differ_between_tasks(tmp_path, manual, task, shape):
  path = manual / 'val' / task / '0.npy'
  _save(path, np.zeros(shape, np.float32))
  image = manual / 'val' / 'image' / '0.npy'
  _build_error(tmp_path, manual, nyuv2_mtl.DataError,
               f'{path}: {task} is {shape[0]}x{shape[1]} but {image} is '
               f'{_H}x{_W}')


@pytest.mark.parametrize('value, shown', [(13.0, '13.0'), (0.5, '0.5'),
                                          (-2.0, '-2.0')])
def test_label_out_of_range(tmp_path, manual, value, shown):
  path = manual / 'train' / 'label' / '0.npy'
  label = np.zeros((_H, _W), np.float32)
  label[3, 4] = value
  _save(path, label)
  _build_error(tmp_path, manual, nyuv2_mtl.DataError,
               rf'{path}: label values \[{shown}\] are neither -1')


@pytest.mark.parametrize('task', nyuv2_mtl.TASK_DIRS)
def test_non_finite_values(tmp_path, manual, task):
  path = manual / 'val' / task / '1.npy'
  array = np.load(path)
  array[2, 3] = np.nan
  _save(path, array)
  _build_error(tmp_path, manual, nyuv2_mtl.DataError,
               rf'{path}: [0-9]+ non-finite values .* index \(2, 3')


@pytest.mark.parametrize('value', [-0.01, 1.5, 255.0])
def test_image_outside_unit_range(tmp_path, manual, value):
  path = manual / 'train' / 'image' / '2.npy'
  image = np.load(path)
  image[5, 6, 1] = value
  _save(path, image)
  _build_error(tmp_path, manual, nyuv2_mtl.DataError,
               f'{path}: image values must lie in \\[0, 1\\]')


def test_failed_build_leaves_nothing_then_builds(tmp_path, manual):
  path = manual / 'val' / 'depth' / '1.npy'
  depth = np.load(path)
  path.write_bytes(b'\x93NUMPY truncated')
  _build_error(tmp_path, manual, nyuv2_mtl.DataError,
               f'{path}: unreadable .npy file')
  assert not nyuv2_mtl.Nyuv2Mtl(data_dir=str(tmp_path / 'tfds')).is_prepared()
  _save(path, depth)
  assert _build(tmp_path, manual).is_prepared()
