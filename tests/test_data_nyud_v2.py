"""The nyud_v2 builder on real NYUDv2 samples arranged in the CEN layout."""

import cv2
import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

import data
from data import hha
from data import nyud_v2
from tests import paths

_NAMES = ('000433', '000464')
_CROP = (slice(6, 474), slice(7, 632))  # The CEN 468x625 crop.


def _read(kind, name):
  path = paths.NYUD_SAMPLES / kind / f'{name}.png'
  if kind == 'depth':
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
  return np.asarray(Image.open(path))


def _official_layout(root):
  """Symlinks the full-frame samples into rgb/, depth/, masks/ + lists."""
  for kind, folder in (('rgb', 'rgb'), ('depth', 'depth'), ('label', 'masks')):
    (root / folder).mkdir(parents=True)
    for name in _NAMES:
      (root / folder / f'{name}.png').symlink_to(
          paths.NYUD_SAMPLES / kind / f'{name}.png')
  line = 'rgb/{0}.png\tmasks/{0}.png\tdepth/{0}.png'
  (root / 'train.txt').write_text(line.format(_NAMES[0]) + '\n')
  (root / 'val.txt').write_text(line.format(_NAMES[1]))  # No final newline.


@pytest.fixture(scope='module')
def built(tmp_path_factory):
  root = tmp_path_factory.mktemp('nyud')
  _official_layout(root / 'manual')
  data.prepare('nyud_v2/hha', data_dir=root / 'tfds',
               manual_dir=root / 'manual')
  return root / 'tfds'


def _by_name(data_dir, split):
  src = tfds.data_source('nyud_v2/hha', split=split, data_dir=data_dir,
                         download=False)
  return {src[i]['name'].decode(): src[i] for i in range(len(src))}


def test_real_samples_read_back_identical(built):
  train, test = _by_name(built, 'train'), _by_name(built, 'test')
  assert list(train) == [_NAMES[0]] and list(test) == [_NAMES[1]]
  for name, ex in ((_NAMES[0], train[_NAMES[0]]), (_NAMES[1], test[_NAMES[1]])):
    np.testing.assert_array_equal(ex['rgb'], _read('rgb', name))
    np.testing.assert_array_equal(ex['depth'], _read('depth', name))
    np.testing.assert_array_equal(ex['label'], _read('label', name))
    assert ex['depth'].dtype == np.uint16 and ex['label'].dtype == np.uint8
    # HHA computed once at build time, on the stored full-frame depth.
    np.testing.assert_array_equal(
        ex['hha'], hha.depth_to_hha(_read('depth', name) / 5000.0,
                                    hha.NYU_KINECT_K))


def test_metadata(built):
  info = tfds.builder('nyud_v2/hha', data_dir=built).info
  assert info.metadata['num_classes'] == 40
  assert info.metadata['class_names'][0] == 'wall'
  assert info.metadata['class_names'][39] == 'otherprop'
  names = (paths.NYUD_SAMPLES / 'classes40.txt').read_text().split('\n')
  assert list(nyud_v2.CLASS_NAMES) == [n for n in names if n]


def test_meta_data_labels_convert_to_cen_convention():
  orig = paths.NYUD_SAMPLES / 'test_labels40_orig'
  files = sorted(orig.glob('new_nyu_class40_*.png'))
  assert len(files) == 654
  seen = np.zeros(256, bool)
  for f in files:
    y = nyud_v2.labels40_from_nyuv2_meta(np.asarray(Image.open(f)))
    assert y.dtype == np.uint8
    seen[np.unique(y)] = True
  assert np.flatnonzero(seen).tolist() == list(range(40)) + [255]
  for name in _NAMES:
    v = np.asarray(Image.open(orig / f'new_nyu_class40_{int(name):04d}.png'))
    np.testing.assert_array_equal(nyud_v2.labels40_from_nyuv2_meta(v),
                                  _read('label', name))


def test_cen_crop_of_real_label_matches_released_crop():
  # The released 468x625 masks are the [6:474, 7:632] crop of the frame.
  crop_dir = paths.NYUD_SAMPLES / 'crop468x625' / 'label'
  for f in sorted(crop_dir.glob('*.png')):
    v = np.asarray(Image.open(paths.NYUD_SAMPLES / 'test_labels40_orig' /
                              f'new_nyu_class40_{int(f.stem):04d}.png'))
    released = np.asarray(Image.open(f))  # Palette PNG -> indices.
    np.testing.assert_array_equal(
        nyud_v2.labels40_from_nyuv2_meta(v)[_CROP], released)


def test_missing_manual_dir_shows_instructions(tmp_path):
  with pytest.raises(AssertionError, match='rgb/, depth/, masks/'):
    data.prepare('nyud_v2', data_dir=tmp_path / 'tfds',
                 manual_dir=tmp_path / 'nowhere')
