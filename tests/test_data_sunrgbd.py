"""The sunrgbd builder on a tiny generated folder in its documented layout."""

import cv2
import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

import data
from data import folder
from data import sunrgbd


def _layout(root, depth, label):
  for sub in ('rgb', 'depth', 'masks'):
    (root / sub).mkdir(parents=True)
  rgb = np.full(label.shape + (3,), 7, np.uint8)
  for name in ('0001', '0002'):
    Image.fromarray(rgb).save(root / 'rgb' / f'{name}.jpg')
    assert cv2.imwrite(str(root / 'depth' / f'{name}.png'), depth)
    Image.fromarray(label).save(root / 'masks' / f'{name}.png')
  line = 'rgb/{0}.jpg\tmasks/{0}.png\tdepth/{0}.png'
  (root / 'train.txt').write_text(line.format('0001'))
  (root / 'test.txt').write_text(line.format('0002') + '\n')


def test_class_names():
  assert len(sunrgbd.CLASS_NAMES) == 37
  assert sunrgbd.CLASS_NAMES[-1] == 'bag'


def test_toolbox_config_converts_depth_and_labels(tmp_path):
  mm = np.array([[0, 1000, 2500], [7999, 9000, 1]], np.uint16)
  raw = ((mm.astype(np.uint32) << 3) | (mm >> 13)).astype(np.uint16)
  seg37 = np.array([[0, 1, 37], [2, 0, 36]], np.uint8)
  _layout(tmp_path / 'manual', raw, seg37)
  data.prepare('sunrgbd/toolbox', data_dir=tmp_path / 'tfds',
               manual_dir=tmp_path / 'manual')
  src = tfds.data_source('sunrgbd/toolbox', split='test',
                         data_dir=tmp_path / 'tfds', download=False)
  ex = src[0]
  np.testing.assert_array_equal(
      ex['depth'], [[0, 5000, 12500], [39995, 40000, 5]])
  np.testing.assert_array_equal(ex['label'], [[255, 0, 36], [1, 255, 35]])
  assert src.dataset_info.metadata['num_classes'] == 37


def test_default_config_rejects_label_37(tmp_path):
  label = np.array([[0, 36, 255], [37, 1, 2]], np.uint8)
  _layout(tmp_path / 'manual', np.ones((2, 3), np.uint16), label)
  with pytest.raises(folder.DataError, match=r'masks/0001\.png: .*\[37\]'):
    data.prepare('sunrgbd', data_dir=tmp_path / 'tfds',
                 manual_dir=tmp_path / 'manual')
