"""Multitask on the official NYUDv2 layout (40 classes, normals fitted to
depth at build time), on the real samples in the CEN layout.

The two full-frame triplets (480x640 RGB and depth; the training split
holds both, twice, the test split the second) get masks cropped to
CEN's 468x625 (the full-frame labels ``[6:474, 7:632]``, written here), so
the pipeline's ``CropAlignToMask`` has something to do, as with the real
release.
"""

import types

import cv2
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from cen_jax import run
from cen_jax import tasks
from cen_jax.tasks.multitask import input_pipeline
from cen_jax.tasks.multitask import modes
from cen_jax.tasks.multitask import steps
from cen_jax.training import loop
from configs import nyud40_multitask
import data
from data import folder
from data import hha
from data import normals
from tests import paths

_TRAIN, _TEST = '000433', '000464'
_CROP = (slice(6, 474), slice(7, 632))
_MEAN = np.array(input_pipeline.RGB_MEAN)
_STD = np.array(input_pipeline.RGB_STD)


def _read(kind, name):
  path = paths.NYUD_SAMPLES / kind / f'{name}.png'
  if kind == 'depth':
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
  return np.asarray(Image.open(path))


@pytest.fixture(scope='module')
def built(tmp_path_factory):
  root = tmp_path_factory.mktemp('nyud40')
  manual = root / 'manual'
  for folder in ('rgb', 'depth', 'masks'):
    (manual / folder).mkdir(parents=True)
  # Four training examples (one batch over 4 fake devices): both triplets,
  # twice, the copies under other names.
  train = []
  for name in (_TRAIN, _TEST):
    for stored in (name, f'copy_{name}'):
      for kind in ('rgb', 'depth'):
        (manual / kind / f'{stored}.png').symlink_to(
            paths.NYUD_SAMPLES / kind / f'{name}.png')
      Image.fromarray(_read('label', name)[_CROP]).save(
          manual / 'masks' / f'{stored}.png')
      train.append(stored)
  line = 'rgb/{0}.png\tmasks/{0}.png\tdepth/{0}.png\n'
  (manual / 'train.txt').write_text(''.join(map(line.format, train)))
  (manual / 'val.txt').write_text(line.format(_TEST))
  data.prepare('nyud_v2/hha_normals', data_dir=root / 'tfds',
               manual_dir=manual)
  return root / 'tfds'


def _source(data_dir, split='test'):
  return tfds.data_source('nyud_v2/hha_normals', split=split,
                          data_dir=data_dir, download=False)


def test_normals_are_fitted_once_on_the_full_frame_depth(built):
  ex = _source(built)[0]
  depth_m = _read('depth', _TEST) / 5000.0
  want = normals.normals_from_depth(depth_m, hha.NYU_KINECT_K)
  assert ex['normal'].dtype == np.float16 and ex['normal'].shape == (
      480, 640, 3)
  np.testing.assert_array_equal(ex['normal'], want.astype(np.float16))
  # float16 keeps the unit vectors to 1e-3 and the holes exactly zero.
  n = ex['normal'].astype(np.float32)
  has = np.any(n != 0, axis=-1)
  np.testing.assert_array_equal(has, np.any(want != 0, axis=-1))
  np.testing.assert_allclose(np.linalg.norm(n[has], axis=-1), 1.0,
                             atol=1e-3)
  assert 0.5 < has.mean() < 0.7  # ~35 % of the raw Kinect depth is missing


def test_pipeline_centre_crops_everything_to_the_mask(built):
  src = _source(built)
  ex = src[0]
  out = input_pipeline.EvalTransform(('rgb', 'depth', 'hha')).map(ex)
  rgb = _read('rgb', _TEST)[_CROP] / 255.0
  depth = _read('depth', _TEST)[_CROP] / 5000.0
  np.testing.assert_array_equal(out['label'], _read('label', _TEST)[_CROP])
  assert out['inputs'].shape == (3, 468, 625, 3)
  np.testing.assert_allclose(out['inputs'][0], (rgb - _MEAN) / _STD,
                             rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(out['inputs'][1], np.repeat(
      depth[..., None], 3, -1), rtol=1e-6)
  np.testing.assert_allclose(out['inputs'][2],
                             (ex['hha'][_CROP] / 255.0 - _MEAN) / _STD,
                             rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(out['depth'], depth, rtol=1e-6)
  np.testing.assert_array_equal(out['normal'],
                                ex['normal'][_CROP].astype(np.float32))
  assert bool(out['valid'])
  # Training: the full crop-aligned frame, scale-cropped and flipped.
  train = input_pipeline.TrainTransform(('rgb',), crop_size=64).random_map(
      ex, np.random.default_rng(0))
  assert train['inputs'].shape == (1, 64, 64, 3)


def _fake_source(*features):
  info = types.SimpleNamespace(full_name='nyud_v2/hha/1.0.0',
                               features=dict.fromkeys(features))
  return types.SimpleNamespace(dataset_info=info)


def test_sources_without_normals_or_hha_are_named():
  with pytest.raises(ValueError, match=r"nyud_v2/hha/1.0.0 has no feature "
                     r"\['normal'\].*nyud_v2/normals"):
    input_pipeline.eval_loader(
        _fake_source('rgb', 'depth', 'label', 'hha', 'name'),
        inputs=('rgb',), batch_size=1)
  with pytest.raises(ValueError, match=r"no feature hha for the input "
                     r"'hha'.*nyud_v2/hha_normals"):
    input_pipeline.eval_loader(
        _fake_source('rgb', 'depth', 'label', 'normal', 'name'),
        inputs=('rgb', 'hha'), batch_size=1)
  with pytest.raises(ValueError, match=r'nyuv2_mtl, synthetic_mtl, '
                     r'nyud_v2/normals'):
    input_pipeline.eval_loader(_fake_source('image', 'label'),
                               inputs=('rgb',), batch_size=1)


@pytest.mark.slow
def test_rgb_hha_multitask_trains_and_evaluates_40_classes(built, tmp_path):
  """Two steps of RGB -> semseg (40), depth; HHA -> normals, on the real
  samples; the eval's numbers are recomputed here in NumPy from the model's
  predictions on the test image."""
  c = nyud40_multitask.get_config()
  c.data.name = 'nyud_v2/hha_normals'
  c.data.data_dir = str(built)
  c.data.crop_size = 64
  c.model.streams = (('rgb', 'semseg'), ('rgb', 'depth'), ('hha', 'normals'))
  c.model.depth = 'tiny'
  c.model.width = 8
  c.model.decoder_features = (16, 8)
  c.optim.batch_size = 4
  c.optim.num_steps = 2
  c.train.log_every_steps = 1
  c.train.checkpoint_every_steps = 2
  c.train.eval_every_epochs = 2  # 1 step per epoch: one eval, at step 2
  c.eval.batch_size = 4
  workdir = tmp_path / 'work'
  summary = run.train_and_evaluate(c, str(workdir))

  task = tasks.build(c, workdir)
  assert task.class_names[:2] == ('wall', 'floor') and len(
      task.class_names) == 40
  variables, step = loop.restore_variables(task, workdir, 'latest')
  assert step == 2
  ex = input_pipeline.EvalTransform(task.modalities).map(_source(built)[0])
  x = jnp.asarray(ex['inputs'][None])
  index = task.streams.input_index
  preds = jax.device_get(jax.jit(lambda v, x: steps.predictions(
      task.model, v, steps.stream_inputs(x, index), (468, 625)))(variables, x))

  label = ex['label']
  seg = np.argmax(preds['semseg'][-1, 0], -1)
  ok = label != 255
  conf = np.bincount(label[ok] * 40 + seg[ok], minlength=1600).reshape(40, 40)
  union = conf.sum(0) + conf.sum(1) - np.diag(conf)
  present = union > 0
  miou = 100 * np.mean(np.diag(conf)[present] / union[present])
  assert summary['eval/semseg/ensemble/miou'] == pytest.approx(miou,
                                                               rel=1e-6)

  depth, d = ex['depth'], preds['depth'][-1, 0, ..., 0].astype(np.float64)
  valid = depth > 0
  assert summary['eval/depth/ensemble/abs_err'] == pytest.approx(
      np.mean(np.abs(d[valid] - depth[valid])), rel=1e-5)

  target, p = ex['normal'], preds['normals'][-1, 0].astype(np.float64)
  has = np.any(target != 0, -1)
  cos = np.sum(p[has] * target[has], -1) / (
      np.linalg.norm(p[has], axis=-1) * np.linalg.norm(target[has], axis=-1))
  angles = np.degrees(np.arccos(np.clip(cos, -1, 1)))
  assert summary['eval/normals/ensemble/mean_angle'] == pytest.approx(
      angles.mean(), rel=1e-4)
  assert summary['eval/normals/ensemble/within_30'] == pytest.approx(
      np.mean(angles < 30), abs=1e-4)


def test_predict_reads_hha_beside_rgb(tmp_path):
  for sub in ('rgb', 'hha'):
    (tmp_path / sub).mkdir()
  rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
  Image.fromarray(rgb).save(tmp_path / 'rgb' / 'a.png')
  Image.fromarray(rgb[:, ::-1]).save(tmp_path / 'hha' / 'a.png')
  (found,) = modes.find_examples(str(tmp_path), ('rgb', 'hha'))
  sample = modes.load_sample(found)
  np.testing.assert_allclose(sample['hha'], rgb[:, ::-1] / 255.0, rtol=1e-6)
  x = input_pipeline.model_inputs(sample, ('hha',))
  np.testing.assert_allclose(x[0], (rgb[:, ::-1] / 255.0 - _MEAN) / _STD,
                             rtol=1e-5, atol=1e-6)
  Image.fromarray(rgb[:1]).save(tmp_path / 'hha' / 'a.png')
  with pytest.raises(ValueError, match=r'hha/a.png: HHA is \(1, 3\)'):
    modes.load_sample(found)
  Image.fromarray(rgb).save(tmp_path / 'rgb' / 'b.png')
  with pytest.raises(FileNotFoundError, match=r'rgb/b.png has no HHA'):
    modes.find_examples(str(tmp_path), ('rgb', 'hha'))


def test_rgbd_folder_config_passes_normals_to_the_layout():
  config = folder.RgbdFolderConfig(name='rooms', class_names=('a', 'b'),
                                   normals=True)
  assert config.layout().normals and not config.layout().hha
  assert 'normal' in folder.features(False, True)
  assert 'normal' not in folder.features(True)
