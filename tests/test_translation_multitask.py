"""Multitask translation (one or more inputs -> several target domains):
the stream generator against single-target generators, the per-target
critics, the losses as sums over targets, the pipeline's targets."""

import functools
import json
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from cen_jax import run
from cen_jax import tasks
from cen_jax.core import exchange
from cen_jax.tasks.translation import input_pipeline
from cen_jax.tasks.translation import losses
from cen_jax.tasks.translation import models
from cen_jax.tasks.translation import steps
from cen_jax.tasks.translation.task import to_uint8
from cen_jax.training import loop
from data import synthetic_translation
from tests import test_translation_modes
from tests import test_translation_task

HEADS = ('normal', 'depth_zbuffer')


def _generator(heads=(), rule='none'):
  kwargs = {} if rule == 'none' else {'threshold': 1e-2}
  return models.Generator(exchange.get(rule, **kwargs), ngf=4, num_downs=4,
                          heads=heads)


def _target_slice(variables, t, num_inputs):
  """Target t's single-target generator: its streams' INs, its head, its
  alpha; every conv shared."""
  rows = slice(t * num_inputs, (t + 1) * num_inputs)
  last = 'deconv4'

  def pick(tree):
    out = {}
    for name, sub in tree.items():
      if name == 'alpha':
        out[name] = sub[t]
      elif name.startswith(last + '_'):
        if name == f'{last}_{HEADS[t]}':
          out[last] = jax.tree.map(lambda a: a, sub)
      else:
        out[name] = {k: (jax.tree.map(lambda a: a[rows], v) if k == 'norm'
                         else v) for k, v in sub.items()}
    return out
  return {c: pick(tree) for c, tree in variables.items()}


def test_streams_without_exchange_are_single_target_generators():
  """Exchange off, stream (t, m) of the multitask generator is branch m of
  a single-target generator holding target t's INs, head and alpha."""
  multi, single = _generator(HEADS), _generator()
  x = jax.random.normal(jax.random.key(1), (2, 3, 16, 16, 3))
  variables = multi.init(jax.random.key(0), x)
  params = variables['params']
  assert params['alpha'].shape == (2, 2)
  assert params['conv2']['norm']['scale'].shape == (4, 8)  # T * M streams
  assert 'deconv4' not in params and {'deconv4_normal',
                                      'deconv4_depth_zbuffer'} <= set(params)
  # A distinct alpha per target, so the ensembles differ.
  variables = jax.tree.map(np.array, variables)
  variables['params']['alpha'][:] = [[0.3, -0.2], [1.0, 0.5]]
  out = jax.jit(multi.apply)(variables, x)
  assert out['outputs'].shape == (2, 2, 3, 16, 16, 3)
  assert out['ensemble'].shape == (2, 3, 16, 16, 3)
  for t in range(2):
    alone = jax.jit(single.apply)(_target_slice(variables, t, 2), x)
    np.testing.assert_allclose(out['outputs'][t], alone['outputs'],
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out['ensemble'][t], alone['ensemble'],
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out['alpha'][t], alone['alpha'], rtol=1e-6)
  np.testing.assert_allclose(
      out['alpha'][1], np.exp([1.0, 0.5]) / np.exp([1.0, 0.5]).sum(),
      rtol=1e-6)


def test_exchange_runs_over_every_stream():
  """Stream (normal, 0)'s conv2 channel 1 with gamma 0 takes the mean of the
  other three streams' channel 1."""
  g = _generator(HEADS, rule='bn_threshold')
  x = jax.random.normal(jax.random.key(1), (2, 1, 16, 16, 3))
  variables = jax.tree.map(np.array, g.init(jax.random.key(0), x))
  apply = jax.jit(functools.partial(g.apply, mutable=['intermediates']))
  _, plain = apply(variables, x)
  variables['params']['conv2']['norm']['scale'][0, 1] = 0.0
  _, inter = apply(variables, x)
  before = plain['intermediates']['conv2_out'][0]
  after = inter['intermediates']['conv2_out'][0]
  np.testing.assert_allclose(after[0, ..., 1], np.mean(before[1:, ..., 1], 0),
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(after[1:], before[1:])


def test_one_critic_per_target():
  d = models.Discriminators(HEADS, ndf=4)
  x = jax.random.normal(jax.random.key(0), (2, 1, 64, 64, 3))
  y = jax.random.normal(jax.random.key(1), (2, 2, 1, 64, 64, 3))
  variables = d.init(jax.random.key(2), x, y)
  assert set(variables['params']) == set(HEADS)
  logits = d.apply(variables, x, y, train=True)
  assert logits.shape == (2, 2, 1, 6, 6)
  one = models.Discriminator(ndf=4)
  for t, name in enumerate(HEADS):
    alone = one.apply({c: v[name] for c, v in variables.items()}, x, y[t],
                      train=True)
    np.testing.assert_allclose(logits[t], alone, rtol=1e-6, atol=1e-6)


def test_losses_sum_over_targets():
  rng = np.random.default_rng(0)
  fake = jnp.asarray(rng.standard_normal((2, 3, 1, 2, 2)), jnp.float32)
  real = jnp.asarray(rng.standard_normal((2, 3, 1, 2, 2)), jnp.float32)
  outputs = jnp.asarray(rng.uniform(-1, 1, (2, 3, 1, 4, 4, 3)), jnp.float32)
  ensemble = jnp.asarray(rng.uniform(-1, 1, (2, 1, 4, 4, 3)), jnp.float32)
  target = jnp.asarray(rng.uniform(-1, 1, (2, 1, 4, 4, 3)), jnp.float32)
  terms = steps.generator_terms(fake, outputs, ensemble, target, 10.0)
  for key in ('g_gan', 'g_l1'):
    want = sum(losses.generator_losses(fake[t], outputs[t], ensemble[t],
                                       target[t], 10.0)[key]
               for t in range(2))
    np.testing.assert_allclose(terms[key], want, rtol=1e-6)
  want = sum(losses.discriminator_loss(real[t], fake[t]) for t in range(2))
  np.testing.assert_allclose(steps.critic_loss(real, fake), want, rtol=1e-6)
  # One target: the official terms, unchanged.
  single = steps.generator_terms(fake[0], outputs[0], ensemble[0],
                                 target[0], 10.0)
  official = losses.generator_losses(fake[0], outputs[0], ensemble[0],
                                     target[0], 10.0)
  assert single == official


# End to end: RGB -> normal + reshading on synthetic_taskonomy/tiny.

TARGETS = ('normal', 'reshading')
OUTPUTS = ('rgb', 'ensemble')


def _config(root):
  c = test_translation_task.tiny_config(root)
  c.data.inputs = ('rgb',)
  c.data.target = ''
  c.data.targets = TARGETS
  c.optim.num_steps = 2  # eval at step 2 (every half epoch of 4 steps)
  return c


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  root = tmp_path_factory.mktemp('translation_multitask')
  config = _config(root)
  workdir = root / 'work'
  summary = run.train_and_evaluate(config, str(workdir))
  return config, workdir, summary


def _translate(task, variables, x, index):
  return np.asarray(jax.jit(functools.partial(
      steps.translate, task.generator, protocol='official'))(
          variables['generator'], jnp.asarray(x), jnp.asarray(index)))


def test_eval_is_every_targets_l1_and_rmse_recomputed(trained):
  config, workdir, summary = trained
  task = tasks.build(config, workdir)
  assert task.stream_names == ('rgb_normal', 'rgb_reshading')
  assert task.best.key == 'eval/mean_ensemble_l1'
  variables, step = loop.restore_variables(task, workdir, 'latest')
  assert step == 2
  source = input_pipeline.get_source(config.data.name, 'test',
                                     data_dir=config.data.data_dir)
  stored = input_pipeline.domains(source)
  l1 = np.zeros((2, 2))
  mse = np.zeros((2, 2))
  for i in range(len(source)):
    ex = input_pipeline.eval_element(source[i], ('rgb',), TARGETS, 32, stored)
    images = np.asarray(source[i]['images'])
    want = input_pipeline.normalise(
        [input_pipeline.resize(images[stored.index(t)], 32, 32)
         for t in TARGETS])
    np.testing.assert_array_equal(ex['target'], want)
    out = _translate(task, variables, ex['inputs'][:, None], [i])[:, :, 0]
    assert out.shape == (2, 2, 32, 32, 3)  # (T, M + 1, H, W, 3)
    diff = out.astype(np.float64) - ex['target'][:, None]
    l1 += np.abs(diff).mean(axis=(2, 3, 4))
    mse += np.square(diff).mean(axis=(2, 3, 4))
  n = len(source)
  for t, target in enumerate(TARGETS):
    for o, output in enumerate(OUTPUTS):
      assert summary[f'eval/{target}/{output}/l1'] == pytest.approx(
          l1[t, o] / n, rel=1e-5)
      assert summary[f'eval/{target}/{output}/rmse'] == pytest.approx(
          np.sqrt(mse[t, o] / n), rel=1e-5)
  assert summary['eval/mean_ensemble_l1'] == pytest.approx(
      l1[:, 1].mean() / n, rel=1e-5)


def test_predict_writes_every_target(trained, tmp_path):
  config, workdir, _ = trained
  task = tasks.build(config, workdir)
  variables, _ = loop.restore_variables(task, workdir, 'best')
  folder = synthetic_translation.write_taskonomy_folder(
      tmp_path / 'scenes', num_train=0, num_test=1, size=40, seed=5)
  shutil.rmtree(folder / 'reshading')  # one target shown, one not
  out = tmp_path / 'out'
  written = run.predict(config, str(workdir), str(folder), str(out))
  name = 'point_0_view_1'
  assert written == {f'{t}/{name}': out / t / f'{name}.png' for t in TARGETS}
  x = test_translation_modes._normalised(folder, name, 'rgb')  # pylint: disable=protected-access
  result = _translate(task, variables, x[None, None], [0])[:, :, 0]
  for t, target in enumerate(TARGETS):
    np.testing.assert_array_equal(np.asarray(Image.open(written[f'{target}/'
                                                                f'{name}'])),
                                  to_uint8(result[t, 1]))
    np.testing.assert_array_equal(
        np.asarray(Image.open(out / 'all' / f'{name}_{target}_rgb.png')),
        to_uint8(result[t, 0]))
  shown = test_translation_modes._normalised(folder, name, 'normal')  # pylint: disable=protected-access
  grid = np.concatenate([
      np.concatenate([x, *result[0], shown], axis=1),
      np.concatenate([x, *result[1], -np.ones_like(x)], axis=1)])
  np.testing.assert_array_equal(np.asarray(Image.open(
      out / 'grid' / f'{name}.png')), to_uint8(grid))


def test_export_analyze_and_import_refusal(trained, tmp_path):
  config, workdir, _ = trained
  task = tasks.build(config, workdir)
  variables, _ = loop.restore_variables(task, workdir, 'best')
  x = np.random.default_rng(3).uniform(-1, 1, (1, 2, 32, 32, 3))
  x = x.astype(np.float32)
  want = _translate(task, variables, x, np.arange(2))
  paths = run.export_model(config, str(workdir), str(tmp_path / 'export'),
                           height=32, width=32, platforms=('cpu',))
  exported = jax.export.deserialize(bytearray(paths['export'].read_bytes()))
  np.testing.assert_allclose(exported.call(x), want, rtol=1e-5, atol=1e-5)
  spec = json.loads(paths['spec'].read_text())
  assert spec['output']['shape'] == [2, 2, 'b', 32, 32, 3]
  assert spec['output']['targets'] == list(TARGETS)
  analysis = run.analyze(config, str(workdir), str(tmp_path / 'analysis'))
  table = pathlib.Path(analysis['table']).read_text()
  assert 'rgb_normal' in table and 'rgb_reshading' in table
  with pytest.raises(ValueError, match=r"several targets \('normal', "
                     r"'reshading'\).*single-target"):
    run.import_torch(config, str(tmp_path / 'imported'), '/x/gen.pkl')


@pytest.mark.parametrize('targets, target, message', [
    (('normal',), '', r'two or more target domains'),
    (('normal', 'reshading'), 'rgb', r"'rgb' and config.data.targets .* "
                                      r'are both set'),
    (('normal', 'normal'), '', r'config.data.targets: targets .* name a '
                               r'domain twice'),
    (('normal', 'rgb'), '', r"config.data.targets: target 'rgb' is also an "
                            r'input'),
])
def test_bad_targets_are_named(tmp_path, targets, target, message):
  c = _config(tmp_path)
  c.data.targets = targets
  c.data.target = target
  with pytest.raises(ValueError, match=message):
    tasks.build(c, tmp_path)


def test_summary_per_target_by_hand_and_best_is_the_mean_min_fid(tmp_path):
  c = _config(tmp_path)
  c.eval.inception_weights = str(tmp_path / 'never_read.pth')
  task = tasks.build(c, tmp_path)
  assert task.best.key == 'eval/mean_min_fid'
  real = np.random.default_rng(0).normal(size=(6, 2, 3))  # (N, T, D)
  # Each output is its target's real set shifted: equal covariances, so its
  # FID is the squared shift.
  shifts = np.array([[[3.0, 0, 0], [0, 1.0, 0]],    # normal: rgb, ensemble
                     [[0, 0, 2.0], [0, 0, 0.5]]])   # reshading
  fake = real[:, :, None] + shifts  # (N, T, M + 1, D)
  sums = {'l1': np.array([[0.6, 1.2], [1.8, 0.3]]),
          'mse': np.array([[0.24, 0.96], [1.5, 0.06]]), 'count': 6.0}
  summary = task.summarize({'sums': sums,
                            'rows': {'real': real, 'fake': fake}})
  want_fid = {('normal', 'rgb'): 9.0, ('normal', 'ensemble'): 1.0,
              ('reshading', 'rgb'): 4.0, ('reshading', 'ensemble'): 0.25}
  for (target, output), fid in want_fid.items():
    np.testing.assert_allclose(summary[f'eval/{target}/{output}/fid'], fid,
                               rtol=1e-9)
  assert summary['eval/normal/rgb/l1'] == pytest.approx(0.1)
  assert summary['eval/reshading/ensemble/rmse'] == pytest.approx(0.1)
  assert summary['eval/mean_ensemble_l1'] == pytest.approx((0.2 + 0.05) / 2)
  assert summary['eval/mean_min_fid'] == pytest.approx((1.0 + 0.25) / 2)
  text = task.format_summary(summary)
  assert text.startswith('normal rgb L1 0.1000 FID 9.00')
  assert 'reshading ensemble L1 0.0500 FID 0.25' in text
  report = task.write_report(tmp_path / 'report', {}, summary)
  assert report.startswith('**normal**\n\n| output | L1 | RMSE | FID | KID |')
  assert '**reshading**' in report
