"""The Taskonomy layout reader and the ``taskonomy`` builder, worked by hand."""

import cv2
import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

import data
from data import taskonomy

_SIZE = 8


def _config(**kwargs):
  return taskonomy.TaskonomyConfig(name='small', min_size=_SIZE, **kwargs)


def _png(path, array, mode=None):
  path.parent.mkdir(parents=True, exist_ok=True)
  if array.dtype == np.uint16:
    assert cv2.imwrite(str(path), array)  # 16-bit grey, as Taskonomy.
  else:
    Image.fromarray(array, mode).save(path)


def _arrays(seed, size=_SIZE):
  """One example's files as stored: 8-bit rgb/reshading, 16-bit others."""
  rng = np.random.default_rng(seed)
  return {
      'rgb': rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
      'reshading': rng.integers(0, 256, (size, size), dtype=np.uint8),
      'depth_zbuffer': rng.integers(0, 65536, (size, size),
                                    dtype=np.uint16),
      'edge_texture': rng.integers(0, 11356, (size, size), dtype=np.uint16),
  }


def _stem(i):
  return f'point_{10 + i}_view_{i % 3}'


def _write(root, train=(0, 1, 2), test=(3,),
           domains=('edge_texture', 'rgb', 'reshading', 'depth_zbuffer')):
  """An official-layout folder; returns {example index: arrays}."""
  arrays = {}
  for i in train + test:
    arrays[i] = _arrays(i)
    for d in domains:
      _png(root / d / f'{_stem(i)}_domain_{d}.png', arrays[i][d])
  for name, ids in (('train_domain.txt', train), ('val_domain.txt', test)):
    lines = [f'{{domain}}/{_stem(i)}_domain_{{domain}}.png' for i in ids]
    (root / name).write_text('\n'.join(lines))  # No final newline.
  return arrays


def _build(tmp_path, manual, config=None):
  return data.prepare('taskonomy', config=config or _config(),
                      data_dir=tmp_path / 'tfds', manual_dir=manual)


def _source(tmp_path, split):
  return tfds.data_source('taskonomy/small', split=split,
                          data_dir=tmp_path / 'tfds', download=False)


# Per-domain preprocessing.


def test_depth_log_then_fixed_maximum_truncated():
  depth = np.array([[0, 1, 7], [1000, 65535, 0]], np.uint16)
  out = taskonomy.preprocess(depth, 'depth_zbuffer')
  # int(log(1 + d) * 255 / 11.1): 0, 15.92, 47.77, 158.71, 254.78.
  want = np.array([[0, 15, 47], [158, 254, 0]], np.uint8)
  assert out.shape == (2, 3, 3) and out.dtype == np.uint8
  for c in range(3):  # Grey repeated to 3 channels.
    np.testing.assert_array_equal(out[..., c], want)
  np.testing.assert_array_equal(
      taskonomy.preprocess(depth, 'depth_euclidean'), out)
  # 65535 as uint16 must not wrap to log(0) (current Pillow + NumPy 2).
  assert out[1, 1, 0] == 254


def test_edges_fixed_maxima_and_clip():
  edges = np.array([[0, 1, 5000, 11355, 20000]], np.uint16)
  # x * 255 / 11355: 0, 0.02, 112.29, 255; 449.1 is clipped.
  np.testing.assert_array_equal(
      taskonomy.preprocess(edges, 'edge_texture')[..., 0],
      [[0, 0, 112, 255, 255]])
  occlusion = np.array([[1000, 6000, 11584]], np.uint16)
  # x * 255 / 11584: 22.01, 132.08, 255.
  np.testing.assert_array_equal(
      taskonomy.preprocess(occlusion, 'edge_occlusion')[..., 0],
      [[22, 132, 255]])


def test_eight_bit_domains_unchanged_grey_repeated():
  rgb = np.arange(18, dtype=np.uint8).reshape(2, 3, 3)
  np.testing.assert_array_equal(taskonomy.preprocess(rgb, 'normal'), rgb)
  grey = np.array([[3, 250]], np.uint8)
  np.testing.assert_array_equal(
      taskonomy.preprocess(grey, 'segment_unsup2d'),
      [[[3, 3, 3], [250, 250, 250]]])
  with pytest.raises(ValueError, match="unknown Taskonomy domain 'mist'"):
    taskonomy.preprocess(grey, 'mist')
  with pytest.raises(ValueError, match=r'\(H, W, 3\).*\(1, 2, 4\)'):
    taskonomy.preprocess(np.zeros((1, 2, 4), np.uint8), 'rgb')


def test_domains_in_official_id_order():
  assert taskonomy.DOMAINS[0] == 'rgb' and taskonomy.DOMAINS[2] == 'reshading'
  assert taskonomy.DOMAINS[7] == 'edge_texture' and len(taskonomy.DOMAINS) == 10


def test_load_domain_reads_pngs_like_official(tmp_path):
  depth = np.array([[1000, 65535]], np.uint16)
  _png(tmp_path / 'd.png', depth)
  np.testing.assert_array_equal(
      taskonomy.load_domain(tmp_path / 'd.png', 'depth_zbuffer')[..., 0],
      [[158, 254]])
  # A palette PNG gives its indices, as np.array(Image.open(...)) does.
  palette = Image.fromarray(np.array([[1, 2]], np.uint8), 'P')
  palette.putpalette([200] * 768)
  palette.save(tmp_path / 'p.png')
  np.testing.assert_array_equal(
      taskonomy.load_domain(tmp_path / 'p.png', 'segment_unsup25d')[..., 1],
      [[1, 2]])


@pytest.mark.parametrize('domain, array, mode, match', [
    ('edge_texture', np.zeros((2, 2), np.uint8), 'L',
     "edge_texture must be a single-channel 16-bit PNG.*'L'"),
    ('rgb', np.zeros((2, 2), np.uint16), None,
     "rgb must be an 8-bit grey, palette or RGB PNG.*'I;16'"),
    ('rgb', np.zeros((2, 2, 4), np.uint8), 'RGBA',
     "rgb must be an 8-bit.*'RGBA'"),
])
def test_load_domain_rejects_modes_the_official_code_corrupts(
    tmp_path, domain, array, mode, match):
  path = tmp_path / 'x.png'
  _png(path, array, mode)
  with pytest.raises(taskonomy.DataError, match=match):
    taskonomy.load_domain(path, domain)


def test_unreadable_png_names_the_file(tmp_path):
  path = tmp_path / 'rgb.png'
  path.write_bytes(b'\x89PNG\r\n\x1a\n but not really')
  with pytest.raises(taskonomy.DataError,
                     match=f'{path}: unreadable image'):
    taskonomy.load_domain(path, 'rgb')


# List files.


def test_read_list_official_templates(tmp_path):
  path = tmp_path / 'train_domain.txt'
  path.write_text('{domain}/point_407_view_2_domain_{domain}.png\r\n'
                  '{domain}/point_1251_view_10_domain_{domain}.png')
  a, b = taskonomy.read_list(path)
  assert (a.name, b.name) == ('point_407_view_2', 'point_1251_view_10')
  assert a.source == f'{path}:1' and b.source == f'{path}:2'
  assert a.path(tmp_path, 'rgb') == (
      tmp_path / 'rgb' / 'point_407_view_2_domain_rgb.png')


@pytest.mark.parametrize('text, match', [
    ('', 'list file is empty'),
    ('rgb/point_1_view_0_domain_rgb.png', r":1: expected a path template"),
    ('{domain}/point_1_view_0_domain_{domain}.png\n\n',
     r":2: expected a path template.*got ''"),
    ('{domain}/point_1_view_0_domain_{domain}.jpg', 'expected a path'),
    ('{domain}/point_1_view_0_domain_{domain}.png\n'
     '{domain}/point_1_view_0_domain_{domain}.png',
     r":2: example 'point_1_view_0' repeats .*:1"),
])
def test_read_list_errors_name_the_line(tmp_path, text, match):
  path = tmp_path / 'l.txt'
  path.write_text(text)
  with pytest.raises(taskonomy.DataError, match=match):
    taskonomy.read_list(path)


def test_read_list_missing_file(tmp_path):
  with pytest.raises(FileNotFoundError, match='split list file not found'):
    taskonomy.read_list(tmp_path / 'train_domain.txt')


# The builder.


def test_builds_present_domains_in_official_order(tmp_path):
  manual = tmp_path / 'manual'
  arrays = _write(manual)
  (manual / 'class_object').mkdir()  # Other Taskonomy folders: ignored.
  builder = _build(tmp_path, manual)
  domains = ['rgb', 'reshading', 'depth_zbuffer', 'edge_texture']
  assert builder.info.metadata['domains'] == domains
  train, test = _source(tmp_path, 'train'), _source(tmp_path, 'test')
  assert train.dataset_info.metadata['domains'] == domains
  assert (len(train), len(test)) == (3, 1)
  for source, ids in ((train, (0, 1, 2)), (test, (3,))):
    for k, i in enumerate(ids):  # List order.
      example = source[k]
      assert example['name'].decode() == _stem(i)
      assert len(example['images']) == len(domains)
      for d, image in zip(domains, example['images']):
        np.testing.assert_array_equal(
            image, taskonomy.preprocess(arrays[i][d], d))


def test_required_domains_stored_alone(tmp_path):
  manual = tmp_path / 'manual'
  _write(manual)
  builder = _build(tmp_path, manual,
                   _config(domains=('edge_texture', 'rgb')))
  assert builder.info.metadata['domains'] == ['rgb', 'edge_texture']


def _build_error(tmp_path, manual, error, match, config=None):
  with pytest.raises(error, match=match):
    _build(tmp_path, manual, config)


def test_missing_domain_folder_or_none(tmp_path):
  manual = tmp_path / 'manual'
  _write(manual, domains=('rgb',))
  _build_error(tmp_path, manual, FileNotFoundError,
               f'{manual / "reshading"}: domain folder not found',
               _config(domains=('rgb', 'reshading')))
  _build_error(tmp_path, manual, ValueError, "unknown Taskonomy domain 'x'",
               _config(domains=('rgb', 'x')))
  empty = tmp_path / 'empty'
  empty.mkdir()
  _write(empty, domains=())
  _build_error(tmp_path, empty, FileNotFoundError,
               r"no domain folder; expected one or more of \('rgb'")


def test_missing_file_names_file_and_line(tmp_path):
  manual = tmp_path / 'manual'
  _write(manual)
  missing = manual / 'reshading' / f'{_stem(1)}_domain_reshading.png'
  missing.unlink()
  _build_error(tmp_path, manual, FileNotFoundError,
               f'{missing}: file of .*train_domain.txt:2 does not exist')


def test_bad_list_line_fails_before_any_image_is_read(tmp_path):
  manual = tmp_path / 'manual'
  _write(manual)
  (manual / 'val_domain.txt').write_text('rgb/x.png')
  _build_error(tmp_path, manual, taskonomy.DataError,
               'val_domain.txt:1: expected a path template')


def test_smaller_than_min_size(tmp_path):
  manual = tmp_path / 'manual'
  _write(manual)
  path = manual / 'rgb' / f'{_stem(0)}_domain_rgb.png'
  _build_error(tmp_path, manual, taskonomy.DataError,
               f'{path}: image is 8x8, smaller than the minimum 9',
               taskonomy.TaskonomyConfig(name='small', min_size=9))


def test_sizes_differ_between_domains(tmp_path):
  manual = tmp_path / 'manual'
  _write(manual)
  path = manual / 'edge_texture' / f'{_stem(2)}_domain_edge_texture.png'
  _png(path, np.zeros((_SIZE, _SIZE + 2), np.uint16))
  _build_error(tmp_path, manual, taskonomy.DataError,
               f'{path}: image is 8x10 but .*rgb.* is 8x8')


def test_failed_build_leaves_nothing_then_builds(tmp_path):
  manual = tmp_path / 'manual'
  arrays = _write(manual)
  path = manual / 'rgb' / f'{_stem(3)}_domain_rgb.png'
  path.write_bytes(b'not a png')
  _build_error(tmp_path, manual, taskonomy.DataError,
               f'{path}: unreadable image')
  assert not taskonomy.Taskonomy(config=_config(),
                                data_dir=tmp_path / 'tfds').is_prepared()
  _png(path, arrays[3]['rgb'])
  assert _build(tmp_path, manual).is_prepared()
