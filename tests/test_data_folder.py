"""Tests of the CEN folder layout reader and the ``rgbd_folder`` builder."""

import pathlib

import cv2
import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

import data
from data import hha
from data import folder

_CLASSES = ('floor', 'wall', 'thing')


def _write_rgb(path, rgb):
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(rgb).save(path)


def _write_depth(path, depth):
  path.parent.mkdir(parents=True, exist_ok=True)
  assert cv2.imwrite(str(path), depth)


def _write_palette_label(path, label):
  """A palette PNG whose colours differ from its indices."""
  path.parent.mkdir(parents=True, exist_ok=True)
  image = Image.fromarray(label)
  image.putpalette(list(np.arange(768)[::-1] % 256))
  assert image.mode == 'P'
  image.save(path)


def _example(seed, shape=(8, 10)):
  rng = np.random.default_rng(seed)
  rgb = rng.integers(0, 256, shape + (3,), dtype=np.uint8)
  depth = rng.integers(0, 40000, shape, dtype=np.uint16)
  label = rng.choice(np.array([0, 1, 2, 255], np.uint8), shape)
  return rgb, depth, label


def _make_layout(root, names=('a', 'b'), test_names=('c',)):
  """A valid CEN layout; returns {name: (rgb, depth, label)}."""
  arrays = {}
  for i, name in enumerate(names + test_names):
    rgb, depth, label = _example(i)
    _write_rgb(root / 'rgb' / f'{name}.png', rgb)
    _write_depth(root / 'depth' / f'{name}.png', depth)
    _write_palette_label(root / 'masks' / f'{name}.png', label)
    arrays[name] = (rgb, depth, label)
  line = 'rgb/{0}.png\tmasks/{0}.png\tdepth/{0}.png'
  (root / 'train.txt').write_text('\n'.join(line.format(n) for n in names)
                                  + '\n')
  # The official lists have no newline after the last line.
  (root / 'val.txt').write_text('\n'.join(line.format(n) for n in test_names))
  return arrays


def _config(name='rooms', **kwargs):
  return folder.RgbdFolderConfig(name=name, class_names=_CLASSES, **kwargs)


def _build(tmp_path, manual, config):
  return data.prepare('rgbd_folder', config=config,
                      data_dir=tmp_path / 'tfds', manual_dir=manual)


def test_read_list_columns_and_missing_final_newline(tmp_path):
  path = tmp_path / 'l.txt'
  path.write_text('rgb/1.png\tmasks/1.png\tdepth/1.png\n'
                  'rgb/2.png\tmasks/2.png\tdepth/2.png')
  entries = folder.read_list(path)
  assert [(e.rgb, e.mask, e.depth) for e in entries] == [
      ('rgb/1.png', 'masks/1.png', 'depth/1.png'),
      ('rgb/2.png', 'masks/2.png', 'depth/2.png')]
  assert entries[1].source == f'{path}:2'


def test_from_void_zero_known_answer():
  v = np.array([[0, 1, 2], [40, 0, 3]], np.uint8)
  np.testing.assert_array_equal(folder.from_void_zero(v, 40),
                                [[255, 0, 1], [39, 255, 2]])
  with pytest.raises(ValueError, match='0..40'):
    folder.from_void_zero(np.array([41]), 40)


def test_sunrgbd_depth_decoding_known_answer():
  mm = np.array([[0, 1234], [9000, 65535 >> 3]], np.uint16)
  raw = ((mm.astype(np.uint32) << 3) | (mm >> 13)) & 0xFFFF
  out = folder.sunrgbd_depth_to_m5000(raw.astype(np.uint16))
  # 1.234 m -> 6170; 9 m and 8.191 m clip at the toolbox's 8 m -> 40000.
  np.testing.assert_array_equal(out, [[0, 6170], [40000, 40000]])
  assert out.dtype == np.uint16


def test_example_name():
  assert folder.example_name('rgb/000003.png') == '000003'
  assert folder.example_name('rgb/scene/01.jpg') == 'scene/01'
  assert folder.example_name('x.png') == 'x'


def test_layout_rejects_unknown_conventions():
  with pytest.raises(ValueError, match=r"\['cen', 'void0'\]"):
    folder.Layout(class_names=_CLASSES, split_lists={}, label_convention='x')
  with pytest.raises(ValueError, match=r"\['m5000', 'sunrgbd'\]"):
    folder.Layout(class_names=_CLASSES, split_lists={}, depth_encoding='x')


def test_build_reads_back_exact_arrays(tmp_path):
  manual = tmp_path / 'manual'
  arrays = _make_layout(manual)
  _build(tmp_path, manual, _config())
  src = tfds.data_source('rgbd_folder/rooms', split='train',
                         data_dir=tmp_path / 'tfds', download=False)
  assert src.dataset_info.metadata['class_names'] == list(_CLASSES)
  assert src.dataset_info.metadata['num_classes'] == 3
  got = {src[i]['name'].decode(): src[i] for i in range(len(src))}
  assert sorted(got) == ['a', 'b']
  for name, (rgb, depth, label) in arrays.items():
    if name in got:
      np.testing.assert_array_equal(got[name]['rgb'], rgb)
      np.testing.assert_array_equal(got[name]['depth'], depth)
      assert got[name]['depth'].dtype == np.uint16
      # Palette indices, not palette colours.
      np.testing.assert_array_equal(got[name]['label'], label)
  test = tfds.data_source('rgbd_folder/rooms', split='test',
                          data_dir=tmp_path / 'tfds', download=False)
  assert [test[i]['name'] for i in range(len(test))] == [b'c']


def test_void0_labels_are_converted(tmp_path):
  manual = tmp_path / 'manual'
  _make_layout(manual)
  v = np.array([[0, 1, 2, 3, 0, 1, 2, 3, 3, 3]] * 8, np.uint8)
  _write_palette_label(manual / 'masks' / 'c.png', v)
  _build(tmp_path, manual, _config(name='v0', label_convention='void0',
                                   split_lists={'test': 'val.txt'}))
  src = tfds.data_source('rgbd_folder/v0', split='test',
                         data_dir=tmp_path / 'tfds', download=False)
  np.testing.assert_array_equal(src[0]['label'], folder.from_void_zero(v, 3))


def test_rgb_and_depth_may_be_larger_than_mask(tmp_path):
  manual = tmp_path / 'manual'
  _make_layout(manual, names=('a',), test_names=('c',))
  big = np.arange(12 * 14, dtype=np.uint16).reshape(12, 14)
  _write_depth(manual / 'depth' / 'a.png', big)
  _build(tmp_path, manual, _config(split_lists={'train': 'train.txt'}))
  src = tfds.data_source('rgbd_folder/rooms', split='train',
                         data_dir=tmp_path / 'tfds', download=False)
  # Stored uncropped; the pipeline crops.
  np.testing.assert_array_equal(src[0]['depth'], big)


def test_hha_feature_with_a_fixed_camera(tmp_path):
  manual = tmp_path / 'manual'
  arrays = _make_layout(manual, names=('a',), test_names=('c',))
  k = (8.0, 0.0, 5.5, 0.0, 8.0, 4.5, 0.0, 0.0, 1.0)
  _build(tmp_path, manual, _config(name='h', hha=True, camera_matrix=k,
                                   split_lists={'train': 'train.txt'}))
  src = tfds.data_source('rgbd_folder/h', split='train',
                         data_dir=tmp_path / 'tfds', download=False)
  expected = hha.depth_to_hha(arrays['a'][1] / 5000.0,
                              np.array(k).reshape(3, 3))
  np.testing.assert_array_equal(src[0]['hha'], expected)


def _corrupt_missing_file(root):
  (root / 'depth' / 'b.png').unlink()
  return FileNotFoundError, r'depth/b\.png: file listed in .*train\.txt:2'


def _corrupt_unreadable_rgb(root):
  (root / 'rgb' / 'b.png').write_bytes(b'not a png at all')
  return folder.DataError, r'rgb/b\.png: unreadable image'


def _corrupt_unreadable_depth(root):
  (root / 'depth' / 'b.png').write_bytes(b'\x89PNG broken')
  return folder.DataError, r'depth/b\.png: unreadable depth'


def _corrupt_unreadable_mask(root):
  (root / 'masks' / 'b.png').write_bytes(b'')
  return folder.DataError, r'masks/b\.png: unreadable image'


def _corrupt_depth_smaller(root):
  _write_depth(root / 'depth' / 'b.png', np.ones((7, 10), np.uint16))
  return folder.DataError, r'depth/b\.png: depth is 7x10, smaller than'


def _corrupt_rgb_smaller(root):
  _write_rgb(root / 'rgb' / 'b.png', np.ones((8, 9, 3), np.uint8))
  return folder.DataError, r'rgb/b\.png: RGB is 8x9, smaller than'


def _corrupt_label_values(root):
  label = np.zeros((8, 10), np.uint8)
  label[0, :2] = (3, 200)
  _write_palette_label(root / 'masks' / 'b.png', label)
  return folder.DataError, r'masks/b\.png: label values \[3, 200\]'


def _corrupt_empty_line(root):
  lines = (root / 'train.txt').read_text().split('\n')
  (root / 'train.txt').write_text('\n'.join([lines[0], '', lines[1]]))
  return folder.DataError, r'train\.txt:2: empty line'


def _corrupt_malformed_line(root):
  (root / 'train.txt').write_text('rgb/a.png masks/a.png depth/a.png\n')
  return folder.DataError, r'train\.txt:1: expected 3 tab-separated'


def _corrupt_two_columns(root):
  (root / 'train.txt').write_text('rgb/a.png\tmasks/a.png\n')
  return folder.DataError, r'train\.txt:1: expected 3 tab-separated'


def _corrupt_missing_list(root):
  (root / 'val.txt').unlink()
  return FileNotFoundError, r'val\.txt: split list file not found'


def _corrupt_empty_list(root):
  (root / 'val.txt').write_text('')
  return folder.DataError, r'val\.txt: list file is empty'


def _corrupt_depth_8bit(root):
  _write_depth(root / 'depth' / 'b.png', np.ones((8, 10), np.uint8))
  return folder.DataError, r'depth/b\.png: depth must be a single-channel'


def _corrupt_grey_rgb(root):
  Image.fromarray(np.ones((8, 10), np.uint8)).save(root / 'rgb' / 'b.png')
  return folder.DataError, r"rgb/b\.png: RGB image has PIL mode 'L'"


def _corrupt_colour_mask(root):
  _write_rgb(root / 'masks' / 'b.png', np.ones((8, 10, 3), np.uint8))
  return folder.DataError, r"masks/b\.png: label image has PIL mode 'RGB'"


def _corrupt_duplicate(root):
  line = 'rgb/a.png\tmasks/a.png\tdepth/a.png'
  (root / 'train.txt').write_text(f'{line}\n{line}')
  return folder.DataError, r"train\.txt:2: example 'a' repeats"


@pytest.mark.parametrize('corrupt', [
    _corrupt_missing_file, _corrupt_unreadable_rgb, _corrupt_unreadable_depth,
    _corrupt_unreadable_mask, _corrupt_depth_smaller, _corrupt_rgb_smaller,
    _corrupt_label_values, _corrupt_empty_line, _corrupt_malformed_line,
    _corrupt_two_columns, _corrupt_missing_list, _corrupt_empty_list,
    _corrupt_depth_8bit, _corrupt_grey_rgb, _corrupt_colour_mask,
    _corrupt_duplicate,
], ids=lambda f: f.__name__[len('_corrupt_'):])
def test_bad_input_fails_naming_the_file(tmp_path, corrupt):
  manual = tmp_path / 'manual'
  _make_layout(manual)
  error, pattern = corrupt(manual)
  with pytest.raises(error, match=pattern):
    _build(tmp_path, manual, _config())
  assert not (tmp_path / 'tfds' / 'rgbd_folder' / 'rooms' / '1.0.0').exists()


def test_builder_without_config_explains(tmp_path):
  with pytest.raises(ValueError, match='RgbdFolderConfig'):
    data.prepare('rgbd_folder', data_dir=tmp_path, manual_dir=tmp_path)


def test_paths_are_relative_to_manual_dir(tmp_path):
  manual = tmp_path / 'manual'
  _make_layout(manual)
  entries = folder.read_list(manual / 'train.txt')
  ex = folder.load_example(pathlib.Path(manual), entries[0],
                           _config().layout())
  assert ex['name'] == 'a'
  assert isinstance(ex['rgb'], bytes)


def test_nyu_camera_matrix_for_frame_and_crop():
  p = pathlib.Path('d.png')
  np.testing.assert_array_equal(folder.nyu_camera_matrix((480, 640), p),
                                hha.NYU_KINECT_K)
  np.testing.assert_allclose(folder.nyu_camera_matrix((468, 625), p)[:2, 2],
                             [325.582449 - 7, 253.736166 - 6])
  with pytest.raises(folder.DataError, match=r'd\.png: depth is 10x20'):
    folder.nyu_camera_matrix((10, 20), p)
