"""Folder prediction on the real NYUDv2 samples, with a known fake model."""

import functools
import os

import cv2
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from cen_jax.tasks.segmentation import inference
from cen_jax.tasks.segmentation import models
from cen_jax.tasks.segmentation import predict
from tests import paths

SAMPLES = paths.NYUD_SAMPLES
NAMES = ('000433', '000464')
MODALITIES = ('rgb', 'depth')
CLASSES = ('no depth', 'dark', 'bright')


def _raw(name):
  """(rgb uint8 (H, W, 3), depth uint16 (H, W)) read independently."""
  rgb = np.asarray(Image.open(SAMPLES / 'rgb' / f'{name}.png').convert('RGB'))
  depth = cv2.imread(str(SAMPLES / 'depth' / f'{name}.png'),
                     cv2.IMREAD_UNCHANGED)
  return rgb, depth


def _expected_mask(rgb, depth):
  """Class 0 where depth is missing, else 1 + (red >= 128)."""
  return np.where(depth > 0, 1 + (rgb[..., 0] >= 128), 0).astype(np.uint8)


def _fake_predict(inputs):
  """Logits whose argmax is ``_expected_mask`` of the un-normalised input."""
  assert inputs.dtype == np.float32 and inputs.shape[:2] == (2, 1)
  np.testing.assert_array_equal(inputs[1, ..., 0], inputs[1, ..., 2])
  red = (inputs[0, 0, ..., 0] * 0.229 + 0.485) * 255  # Undo normalise.
  cls = np.where(inputs[1, 0, ..., 0] > 0, 1 + (red > 127.5), 0)
  return 5 * np.eye(3, dtype=np.float32)[cls][None]


def _link(dst, src):
  dst.parent.mkdir(parents=True, exist_ok=True)
  os.symlink(src, dst)


def _folder(tmp_path, rgb=NAMES, depth=NAMES):
  """An input folder of symlinks to the shared samples."""
  root = tmp_path / 'in'
  for name in rgb:
    _link(root / 'rgb' / f'{name}.png', SAMPLES / 'rgb' / f'{name}.png')
  for name in depth:
    _link(root / 'depth' / f'{name}.png', SAMPLES / 'depth' / f'{name}.png')
  (root / 'depth').mkdir(parents=True, exist_ok=True)
  return root


def _read(path):
  return np.asarray(Image.open(path))


def _check_outputs(prediction, rgb, mask):
  colors = predict.palette(3)
  got_mask = _read(prediction.mask)
  assert got_mask.dtype == np.uint8 and got_mask.shape == mask.shape
  np.testing.assert_array_equal(got_mask, mask)
  np.testing.assert_array_equal(_read(prediction.color), colors[mask])
  blended = (rgb.astype(np.int64) + colors[mask] + 1) // 2
  np.testing.assert_array_equal(_read(prediction.overlay), blended)


def test_palette_is_the_voc_map_shifted_past_black():
  np.testing.assert_array_equal(
      predict.palette(4), [[128, 0, 0], [0, 128, 0], [128, 128, 0],
                           [0, 0, 128]])
  full = predict.palette(256)
  assert full.dtype == np.uint8 and full.shape == (256, 3)
  assert len(np.unique(full, axis=0)) == 256
  assert not (full == 0).all(axis=1).any()
  with pytest.raises(ValueError, match='1..256'):
    predict.palette(257)


def test_blend_rounds_half_up():
  rgb = np.array([[0, 1, 255, 10]], np.uint8)
  color = np.array([[1, 2, 255, 0]], np.uint8)
  np.testing.assert_array_equal(predict.blend(rgb, color), [[1, 2, 255, 5]])
  np.testing.assert_array_equal(predict.blend(rgb, color, 0.25),
                                [[0, 1, 255, 8]])


def test_predict_folder_writes_masks_colours_and_overlays(tmp_path):
  out = tmp_path / 'out'
  written = predict.predict_folder(
      _fake_predict, _folder(tmp_path), out, modalities=MODALITIES,
      num_classes=3, class_names=CLASSES, progress=False)
  assert [p.name for p in written] == list(NAMES)
  for prediction in written:
    rgb, depth = _raw(prediction.name)
    mask = _expected_mask(rgb, depth)
    assert set(np.unique(mask)) == {0, 1, 2}  # All three classes occur.
    assert prediction.mask == out / 'mask' / f'{prediction.name}.png'
    _check_outputs(prediction, rgb, mask)
  assert (out / 'legend.txt').read_text().splitlines() == [
      '0\tno depth\t#800000', '1\tdark\t#008000', '2\tbright\t#808000']


def test_list_file_in_the_official_column_order(tmp_path):
  listing = tmp_path / 'val.txt'
  listing.write_text('rgb/000433.png\tlabel/000433.png\tdepth/000433.png\n'
                     'rgb/000464.png\tdepth/000464.png')
  written = predict.predict_folder(
      _fake_predict, listing, tmp_path / 'out', modalities=MODALITIES,
      num_classes=3, root=SAMPLES, progress=False)
  assert [p.name for p in written] == list(NAMES)
  rgb, depth = _raw('000464')
  _check_outputs(written[1], rgb, _expected_mask(rgb, depth))


def test_list_with_the_label_in_the_depth_column_names_the_file(tmp_path):
  # The shared samples' list.txt is rgb, depth, label: not the convention.
  with pytest.raises(predict.DataError, match=r'label/000433\.png.*16-bit'):
    predict.predict_folder(_fake_predict, SAMPLES / 'list.txt',
                           tmp_path / 'out', modalities=MODALITIES,
                           num_classes=3, progress=False)


def test_list_line_errors_name_the_line(tmp_path):
  listing = tmp_path / 'val.txt'
  listing.write_text('rgb/000433.png depth/000433.png\n')
  with pytest.raises(predict.DataError, match=r'val\.txt:1: expected 2 or 3'):
    predict.examples_from_list(listing, MODALITIES, root=SAMPLES)
  listing.write_text('rgb/000433.png\tdepth/missing.png\n')
  with pytest.raises(predict.DataError,
                     match=r'depth/missing\.png: listed in .*val\.txt:1'):
    predict.examples_from_list(listing, MODALITIES, root=SAMPLES)
  with pytest.raises(ValueError, match='one modality besides RGB'):
    predict.examples_from_list(listing, ('rgb', 'depth', 'hha'))


def test_unpaired_files_are_named(tmp_path):
  root = _folder(tmp_path / 'a', depth=NAMES[:1])
  with pytest.raises(predict.DataError,
                     match=r'rgb/000464\.png has no .*depth/000464\.png'):
    predict.examples_from_folder(root, MODALITIES)
  root = _folder(tmp_path / 'b', rgb=NAMES[:1])
  with pytest.raises(predict.DataError,
                     match=r'depth/000464\.png has no .*rgb/000464\.png'):
    predict.examples_from_folder(root, MODALITIES)
  with pytest.raises(FileNotFoundError, match=r'hha: input folder'):
    predict.examples_from_folder(root, ('rgb', 'hha'))


def test_unreadable_png_is_named(tmp_path):
  root = _folder(tmp_path, rgb=NAMES[:1], depth=())
  (root / 'depth' / '000433.png').write_bytes(b'\x89PNG not really')
  with pytest.raises(predict.DataError,
                     match=r'depth/000433\.png: unreadable'):
    predict.predict_folder(_fake_predict, root, tmp_path / 'out',
                           modalities=MODALITIES, num_classes=3,
                           progress=False)


def test_size_mismatch_is_named_and_crop_to_rgb_aligns(tmp_path):
  rgb, depth = _raw('000433')
  root = tmp_path / 'in'
  for sub in ('rgb', 'depth'):
    (root / sub).mkdir(parents=True)
  # CEN's release: RGB cropped [6:474, 7:632], depth left at 480x640.
  crop = rgb[6:474, 7:632]
  Image.fromarray(crop).save(root / 'rgb' / '000433.png')
  cv2.imwrite(str(root / 'depth' / '000433.png'), depth)
  with pytest.raises(predict.DataError,
                     match=r'depth/000433\.png: depth is 480x640 but .*'
                     r'rgb/000433\.png is 468x625'):
    predict.predict_folder(_fake_predict, root, tmp_path / 'out',
                           modalities=MODALITIES, num_classes=3,
                           progress=False)
  (written,) = predict.predict_folder(
      _fake_predict, root, tmp_path / 'out', modalities=MODALITIES,
      num_classes=3, crop_to_rgb=True, progress=False)
  _check_outputs(written, crop, _expected_mask(crop, depth[6:474, 7:632]))
  # A smaller depth is an error even with crop_to_rgb.
  cv2.imwrite(str(root / 'depth' / '000433.png'), depth[:400])
  with pytest.raises(predict.DataError, match='400x640'):
    predict.predict_folder(_fake_predict, root, tmp_path / 'out',
                           modalities=MODALITIES, num_classes=3,
                           crop_to_rgb=True, progress=False)


def test_bad_arguments_and_outputs_are_reported(tmp_path):
  root = _folder(tmp_path, rgb=NAMES[:1], depth=NAMES[:1])
  run = functools.partial(predict.predict_folder, _fake_predict, root,
                          tmp_path / 'out', progress=False)
  with pytest.raises(ValueError, match=r'000433: .*\(1, 480, 640, 4\)'):
    run(modalities=MODALITIES, num_classes=4)
  with pytest.raises(ValueError, match=r"\('rgb', 'depth', 'hha'\)"):
    run(modalities=('rgb', 'thermal'), num_classes=3)
  with pytest.raises(ValueError, match='2 class names for 3 classes'):
    run(modalities=MODALITIES, num_classes=3, class_names=('a', 'b'))


def test_tiny_model_on_an_odd_sized_crop(tmp_path):
  rgb, depth = _raw('000464')
  root = tmp_path / 'in'
  for sub in ('rgb', 'depth'):
    (root / sub).mkdir(parents=True)
  Image.fromarray(rgb[100:150, 200:270]).save(root / 'rgb' / 'crop.png')
  cv2.imwrite(str(root / 'depth' / 'crop.png'), depth[100:150, 200:270])
  model = models.build(dict(depth='tiny', num_classes=5, width=8,
                            exchange='bn_threshold', decoder_features=(16, 8)))
  shapes = jax.eval_shape(functools.partial(model.init, train=False),
                          jax.random.key(0), jnp.zeros((2, 1, 32, 32, 3)))
  rng = np.random.default_rng(0)
  variables = jax.tree.map(
      lambda s: rng.uniform(0.5, 1.5, s.shape).astype(np.float32), shapes)
  logits = []
  fn = inference.make_predict_fn(model.apply, variables)  # Pads to 64x96.
  (written,) = predict.predict_folder(
      lambda x: logits.append(fn(x)) or logits[-1], root, tmp_path / 'out',
      modalities=MODALITIES, num_classes=5, progress=False)
  assert logits[0].shape == (1, 50, 70, 5)
  mask = _read(written.mask)
  np.testing.assert_array_equal(mask, np.argmax(logits[0][0], axis=-1))
  np.testing.assert_array_equal(_read(written.color),
                                predict.palette(5)[mask])
