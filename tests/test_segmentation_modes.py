"""main.py's segmentation modes (predict, analyze, export) and evaluation.

One tiny model is trained for 4 steps on the built-in dataset (module
fixture); every mode then restores it from the workdir as a user would.
"""

import functools
import json
import os
import subprocess
import sys

import cv2
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from cen_jax import run as run_lib
from cen_jax import tasks
from cen_jax.core import kernels
from cen_jax.core import resize
from cen_jax.tasks.segmentation import export
from cen_jax.tasks.segmentation import inference
from cen_jax.tasks.segmentation import input_pipeline
from cen_jax.tasks.segmentation import metrics
from cen_jax.tasks.segmentation import models
from cen_jax.tasks.segmentation import predict
from cen_jax.tasks.segmentation import steps
from cen_jax.training import checkpointing
from cen_jax.training import loop
from tests import paths
from tests import tiny
from tests.test_loop import _config

SAMPLES = paths.NYUD_SAMPLES
NAMES = ('000433', '000464')


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """``(config, workdir)`` of a finished 4-step run (checkpoints at 2, 4)."""
  root = tmp_path_factory.mktemp('run')
  config = _config(root)
  run_lib.train_and_evaluate(config, str(root / 'work'))
  return config, root / 'work'


def _restore(config, workdir, which='best'):
  """``(variables, step)`` as every mode restores them."""
  return loop.restore_variables(tasks.build(config, workdir), workdir, which)


def _quarter_logits(model, variables, x):
  out = model.apply(variables, x, train=False)
  return jnp.concatenate([out['modality_logits'],
                          out['ensemble_logits'][None]])


def _official_logits(model, variables, x):
  """Every output at the input size, by the official single-scale protocol."""
  return resize.resize_bicubic_cv2(_quarter_logits(model, variables, x),
                                   x.shape[2:4])


def _normalised_sample(name):
  """``(M=2, 1, H, W, 3)`` inputs of a real sample, normalised by hand."""
  rgb = np.asarray(Image.open(SAMPLES / 'rgb' / f'{name}.png'),
                   np.float32)
  depth = cv2.imread(str(SAMPLES / 'depth' / f'{name}.png'),
                     cv2.IMREAD_UNCHANGED).astype(np.float32)
  rgb = (rgb / 255 - np.array([0.485, 0.456, 0.406], np.float32)) / np.array(
      [0.229, 0.224, 0.225], np.float32)
  depth = np.repeat(depth[..., None] / 5000, 3, axis=-1)
  return np.stack([rgb, depth])[:, None].astype(np.float32)


def _normalised(src, name):
  """``(M=2, 1, H, W, 3)`` inputs of ``src/{rgb,depth}/<name>.png``."""
  example = predict.Example(name, {m: src / m / f'{name}.png'
                                   for m in ('rgb', 'depth')})
  return predict.read_example(example, ('rgb', 'depth'))[1][:, None]


def test_restore_variables_reads_the_best_checkpoint(run):
  config, workdir = run
  variables, step = _restore(config, str(workdir))
  assert step == 4
  # Only the weights were read; they equal those of the whole state.
  assert set(variables) == {'params', 'batch_stats'}
  task = tasks.build(config, workdir)
  with checkpointing.Checkpointer(workdir) as ckpt:
    state = jax.device_get(ckpt.restore(
        4, loop.abstract_state(task, task.trainer())).state)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(variables),
               {'params': state['params'],
                'batch_stats': state['batch_stats']})
  with pytest.raises(ValueError, match="'newest'"):
    _restore(config, str(workdir), 'newest')
  with pytest.raises(FileNotFoundError, match='No step 3'):
    _restore(config, str(workdir), '3')


def test_predict_on_real_samples_equals_the_official_protocol(run, tmp_path):
  config, workdir = run
  src = tmp_path / 'in'
  for sub in ('rgb', 'depth'):
    (src / sub).mkdir(parents=True)
    for name in NAMES:
      os.symlink(SAMPLES / sub / f'{name}.png', src / sub / f'{name}.png')
  written = run_lib.predict(config, str(workdir), str(src),
                                     str(tmp_path / 'out'))
  assert [w.name for w in written] == list(NAMES)

  variables, _ = _restore(config, str(workdir))
  model = models.build(config.model)
  colors = predict.palette(7)
  for w in written:
    # 480 x 640 is a multiple of the stride: padding changes nothing, so
    # the mask is the official single-scale ensemble prediction.
    logits = _official_logits(model, variables, _normalised_sample(w.name))
    want = np.asarray(jnp.argmax(logits[-1, 0], axis=-1)).astype(np.uint8)
    mask = np.asarray(Image.open(w.mask))
    np.testing.assert_array_equal(mask, want)
    np.testing.assert_array_equal(np.asarray(Image.open(w.color)),
                                  colors[want])
    rgb = np.asarray(Image.open(SAMPLES / 'rgb' / f'{w.name}.png'))
    np.testing.assert_array_equal(np.asarray(Image.open(w.overlay)),
                                  predict.blend(rgb, colors[want]))
  # The legend names the dataset's classes with their colours.
  names = input_pipeline.class_names(input_pipeline.get_source(
      config.data.name, 'test', data_dir=config.data.data_dir))
  legend = (tmp_path / 'out' / 'legend.txt').read_text().splitlines()
  assert legend[1] == f'1\t{names[1]}\t#{"%02x%02x%02x" % tuple(colors[1])}'

  with pytest.raises(ValueError, match='one mask per image'):
    run_lib.predict(config, str(workdir), str(src),
                             str(tmp_path / 'o2'), output='all')


def test_predict_a_modality_output_by_name(run, tmp_path):
  config, workdir = run
  src = tmp_path / 'in'
  rgb = np.asarray(Image.open(SAMPLES / 'rgb' / '000464.png'))[:45, :70]
  depth = cv2.imread(str(SAMPLES / 'depth' / '000464.png'),
                     cv2.IMREAD_UNCHANGED)[:45, :70]
  (src / 'rgb').mkdir(parents=True)
  (src / 'depth').mkdir()
  Image.fromarray(rgb).save(src / 'rgb' / 'a.png')
  cv2.imwrite(str(src / 'depth' / 'a.png'), depth)
  (w,) = run_lib.predict(config, str(workdir), str(src),
                                  str(tmp_path / 'out'), output='depth')
  variables, _ = _restore(config, str(workdir))
  want = inference.make_predict_fn(
      models.build(config.model).apply, variables, output=1,
      compiler_options=kernels.compiler_options(config.model.kernels))(
          predict.read_example(predict.Example('a', {
              'rgb': src / 'rgb' / 'a.png',
              'depth': src / 'depth' / 'a.png'}), ('rgb', 'depth'))[1][:, None])
  assert want.shape == (1, 45, 70, 7)
  np.testing.assert_array_equal(np.asarray(Image.open(w.mask)),
                                np.argmax(want[0], axis=-1))


def test_analyze_counts_the_channels_below_the_threshold(run, tmp_path):
  config, workdir = run
  variables, _ = _restore(config, str(workdir))
  variables = jax.tree.map(np.array, variables)  # writable host copies
  scale = variables['params']['encoder']['layer1_0']['bn2']['scale']
  scale[0, :] = 1.0
  scale[1, :] = 1.0
  scale[0, [0, 3]] = [0.01, -0.019]  # rgb exchanges 2 of 8 channels
  scale[1, 5] = 0.0  # depth 1 of 8
  scale[1, 6] = 0.02  # not below the threshold
  for name in ('layer2_0', 'layer3_0', 'layer4_0'):
    variables['params']['encoder'][name]['bn2']['scale'][:] = 1.0
  imported = tmp_path / 'imported'
  checkpointing.save_variables(imported / loop.IMPORTED_DIR, variables)
  paths_ = run_lib.analyze(config, str(imported), checkpoint='imported')
  assert paths_['table'].parent == imported / 'analysis' / '0'
  table = paths_['table'].read_text()
  assert '| layer1.0 | 8 | 25.0% | 12.5% |' in table
  assert '| layer2.0 | 16 | 0.0% | 0.0% |' in table
  # 2 and 1 of the 8 + 16 + 32 + 64 = 120 bn2 channels.
  assert '| all | 120 | 1.7% | 0.8% |' in table
  for key in ('fractions', 'histograms'):
    image = np.asarray(Image.open(paths_[key]))
    assert image.ndim == 3 and image.shape[0] >= 250 and image.dtype == np.uint8


def test_export_round_trip_equals_the_model(run, tmp_path):
  config, workdir = run
  out = tmp_path / 'export'
  paths_ = run_lib.export_model(config, str(workdir), str(out),
                                  height=36, width=52, platforms=('cpu',))
  variables, _ = _restore(config, str(workdir))
  restored = checkpointing.load_variables(paths_['params'])
  jax.tree.map(np.testing.assert_array_equal, restored,
               jax.device_get(variables))
  x = np.random.default_rng(3).normal(size=(2, 3, 36, 52, 3)).astype(
      np.float32)
  got = export.load_export(paths_['export']).call(x)
  want = _official_logits(models.build(config.model), variables, x)
  assert got.shape == (3, 3, 36, 52, 7)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  spec = json.loads(paths_['spec'].read_text())
  assert spec['input']['shape'] == [2, 'B', 36, 52, 3]
  assert spec['output']['shape'] == [3, 'B', 36, 52, 7]
  assert spec['output']['order'] == ['rgb', 'depth', 'ensemble']
  assert spec['checkpoint_step'] == 4 and len(spec['class_names']) == 7


def test_single_scale_tta_is_the_official_eval_protocol(run):
  config, workdir = run
  task = tasks.build(config, workdir)
  assert task.eval_step.keywords['logits_fn'] is steps.full_res_logits
  variables, _ = _restore(config, workdir)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 2, 30, 42, 3)),
                  jnp.float32)
  official = jax.jit(functools.partial(steps.full_res_logits, task.model),
                     static_argnums=2)(variables, x, (30, 42))
  tta = jax.jit(functools.partial(inference.model_logits_fn, task.model),
                static_argnums=2)(variables, x, (30, 42))
  np.testing.assert_array_equal(tta, official)


def _with_eval(config, scales, flip):
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.eval.scales = scales
    config.eval.flip = flip
  return config


def _random_weights_workdir(config, workdir):
  """A workdir whose imported weights give varied predictions.

  Fan-in scaled random weights keep the activations O(1); a 4-step model
  still predicts one class everywhere, which would hide the augmentation.
  """
  variables = tiny.random_variables(models.build(config.model),
                                   bias_std=0.01)
  checkpointing.save_variables(workdir / loop.IMPORTED_DIR, variables)
  return workdir


def test_multi_scale_flip_evaluation_by_hand(run, tmp_path):
  config, _ = run
  workdir = _random_weights_workdir(config, tmp_path)
  config = _with_eval(config, (0.75, 1.25), True)
  summary = run_lib.evaluate(config, str(workdir), 'imported')

  # By hand: at each scale, the mean of the pass and its mirrored pass
  # (logits mirrored back), resized to the label size; the mean over the
  # scales; then the dataset-level confusion matrix of every output.
  task = tasks.build(config, workdir)
  variables, _ = _restore(config, str(workdir), 'imported')
  eval_source = task.source('test')

  @jax.jit
  def logits_fn(x):
    total = 0
    for scale in (0.75, 1.25):
      size = inference.scaled_size(x.shape[2:4], scale)
      xs = resize.resize_bilinear(x, size, align_corners=False)
      plain = _quarter_logits(task.model, variables, xs)
      mirrored = _quarter_logits(task.model, variables, xs[:, :, :, ::-1])
      both = (plain + mirrored[:, :, :, ::-1]) / 2
      total = total + resize.resize_bicubic_cv2(both, x.shape[2:4])
    return total / 2

  conf = np.zeros((3, 7, 7), np.int64)
  for batch in input_pipeline.eval_loader(
      eval_source, batch_size=4, modalities=config.data.modalities):
    logits = logits_fn(jnp.moveaxis(batch['inputs'], 1, 0))
    for o in range(3):
      conf[o] += np.asarray(metrics.confusion_matrix(
          batch['label'], jnp.argmax(logits[o], -1), 7, valid=batch['valid']))
  assert conf.sum() == 3 * 8 * 32 * 32 - 3 * np.sum(
      [np.sum(b['label'] == 255) for b in input_pipeline.eval_loader(
          eval_source, batch_size=4, modalities=config.data.modalities)])
  assert summary == task.summarize(conf)
  single = run_lib.evaluate(_with_eval(config, (1.0,), False), str(workdir),
                          'imported')
  # Not vacuous: the model predicts several classes, and the augmentation
  # changes the predictions.
  assert np.count_nonzero(conf[-1].sum(axis=0)) >= 3
  assert single['eval/ensemble/pixel_acc'] != summary[
      'eval/ensemble/pixel_acc']


def test_training_writes_the_exchange_images_to_tensorboard(run):
  tf = pytest.importorskip('tensorflow')
  _, workdir = run
  events = sorted(workdir.glob('events.out.tfevents.*'))
  assert events
  tags = set()
  for path in events:
    for record in tf.compat.v1.train.summary_iterator(str(path)):
      tags |= {(record.step, v.tag) for v in record.summary.value}
  assert (4, 'exchange/exchange_fractions') in tags
  assert (4, 'exchange/gamma_histograms') in tags


def test_main_cli_modes(run, tmp_path):
  config, workdir = run
  base = [sys.executable, 'main.py', '--config=configs/quickstart.py',
          f'--workdir={workdir}',
          f'--config.data.name={config.data.name}',
          f'--config.data.data_dir={config.data.data_dir}',
          f'--config.model.width={config.model.width}',
          '--config.model.decoder_features=(16,16)']
  out = tmp_path / 'analysis'
  result = subprocess.run(base + ['--mode=analyze', f'--output={out}'],
                          cwd=paths.REPO, capture_output=True, text=True,
                          check=False, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert (out / 'exchange_table.md').read_text().startswith(
      'Exchanged bn2 channels, bn_threshold exchange, checkpoint step 4')
  result = subprocess.run(base + ['--mode=export', f'--output={tmp_path}/e',
                                  '--export_size=480'],
                          cwd=paths.REPO, capture_output=True, text=True,
                          check=False, timeout=300)
  assert result.returncode != 0
  assert '--export_size=H,W' in result.stderr


def test_a_users_exchange_rule_works_in_every_mode(tmp_path):
  """examples/exchange_rules.py, selected by import path: train, eval,
  analyze, export and predict run with it as with the built-ins."""
  config = _config(tmp_path)
  config.model.exchange = 'examples.exchange_rules:relative_threshold'
  # ratio 1: each modality takes the channels where the other's |gamma| is
  # larger, about half of them once training has moved the scales.
  config.model.exchange_kwargs = {'ratio': 1.0}
  config.optim.stage_epochs = (0.5,)  # 2 steps
  workdir = tmp_path / 'work'
  summary = run_lib.train_and_evaluate(config, str(workdir))
  assert 0.0 <= summary['eval/ensemble/miou'] <= 100.0
  assert run_lib.evaluate(config, str(workdir)) == summary
  task = tasks.build(config, workdir)
  assert task.model.exchange.name == config.model.exchange
  # Analyze counts what the rule exchanges on the trained scales.
  variables, step = _restore(config, workdir)
  scales = models.bn2_scales(variables['params'])
  want = sum(int(np.sum(np.abs(s[0]) < np.abs(s[1])))
             for s in map(np.asarray, scales.values()))
  assert want > 0
  table = run_lib.analyze(config, str(workdir))['table'].read_text()
  total = sum(s.shape[-1] for s in scales.values())
  assert f'| all | {total} | {100 * want / total:.1f}% |' in table
  paths_ = run_lib.export_model(config, str(workdir), str(tmp_path / 'e'),
                                height=32, width=32, platforms=('cpu',))
  x = np.random.default_rng(0).normal(size=(2, 1, 32, 32, 3)).astype(
      np.float32)
  np.testing.assert_allclose(
      export.load_export(paths_['export']).call(x),
      _official_logits(task.model, variables, x), rtol=1e-5, atol=1e-5)
  src = tmp_path / 'in'
  (src / 'rgb').mkdir(parents=True)
  (src / 'depth').mkdir()
  Image.fromarray(np.asarray(Image.open(SAMPLES / 'rgb' / '000464.png'))[
      :32, :32]).save(src / 'rgb' / 'a.png')
  cv2.imwrite(str(src / 'depth' / 'a.png'), cv2.imread(
      str(SAMPLES / 'depth' / '000464.png'), cv2.IMREAD_UNCHANGED)[:32, :32])
  (written,) = run_lib.predict(config, str(workdir), str(src),
                               str(tmp_path / 'out'))
  logits = _official_logits(task.model, variables, _normalised(src, 'a'))
  np.testing.assert_array_equal(np.asarray(Image.open(written.mask)),
                                np.argmax(logits[-1, 0], axis=-1))
