"""The translation task end to end: training, resume, the best checkpoint and
evaluation (``cen_jax/tasks/translation/task.py`` and ``steps.py``).

One tiny CEN U-Net (5 levels, 32 x 32, width 4) and its critic are trained
for 4 steps on the built-in ``synthetic_taskonomy/tiny`` (16 train / 8 test)
once per session (``trained_run``), evaluated at steps 2 and 4;
test_translation_modes.py restores the same workdir.
"""

import functools
import logging
import pathlib
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from cen_jax import run
from cen_jax import tasks
from cen_jax.tasks.translation import fid as fid_lib
from cen_jax.tasks.translation import inception
from cen_jax.tasks.translation import steps
from cen_jax.tasks.translation import task as task_lib
from cen_jax.training import checkpointing
from cen_jax.training import loop
from cen_jax.training import parallel
from cen_jax.training.task import BestMetric
from configs import translation_quickstart
from tests import crash
from tests import test_fid

NUM_STEPS = 4
EVAL_STEPS = (2, 4)
OUTPUTS = ('reshading', 'edge_texture', 'ensemble')
NUM_TEST = 8


def tiny_config(root: pathlib.Path) -> ml_collections.ConfigDict:
  """The quickstart at 32 x 32: 4 steps of batch 4, eval at 2 and 4."""
  c = translation_quickstart.get_config()
  c.data.name = 'synthetic_taskonomy/tiny'  # 40 x 40, 16 train / 8 test
  c.data.data_dir = str(pathlib.Path(root) / 'tfds')
  c.data.load_size = 40
  c.data.crop_size = 32
  c.model.num_downs = 5  # 32 -> 1
  c.model.ngf = 4
  c.model.ndf = 4
  c.optim.batch_size = 4  # one per fake device; 4 steps per epoch
  c.optim.num_steps = NUM_STEPS
  c.train.log_every_steps = 1
  # Steps 2 and 4. The configs hold an int here, which a float cannot
  # override: replace the field.
  del c.train.eval_every_epochs
  c.train.eval_every_epochs = 0.5
  c.train.checkpoint_every_steps = 2
  c.eval.batch_size = 4
  return c


def with_eval(config: ml_collections.ConfigDict,
              **fields: Any) -> ml_collections.ConfigDict:
  """A copy of ``config`` with ``config.eval`` fields replaced."""
  config = config.copy_and_resolve_references()
  for k, v in fields.items():
    config.eval[k] = v
  return config


class TrainedRun(NamedTuple):
  """A finished tiny run.

  Attributes:
    config: its config.
    workdir: its workdir (checkpoints at steps 2 and 4).
    evals: ``{step: summary}`` of the evaluations during training.
    warnings: messages of the absl warnings logged while training.
  """
  config: ml_collections.ConfigDict
  workdir: pathlib.Path
  evals: dict[int, dict[str, float]]
  warnings: list[str]


class _Collect(logging.Handler):

  def __init__(self):
    super().__init__(logging.WARNING)
    self.messages = []

  def emit(self, record):
    self.messages.append(record.getMessage())


@functools.lru_cache(maxsize=None)
def _train_once(root: str) -> TrainedRun:
  root = pathlib.Path(root)
  config = tiny_config(root)
  workdir = root / 'work'
  summaries = []
  real_summarize = task_lib.Translation.summarize

  def recording(self, totals):
    summaries.append(real_summarize(self, totals))
    return summaries[-1]

  handler = _Collect()
  logging.getLogger('absl').addHandler(handler)
  try:
    with pytest.MonkeyPatch.context() as mp:
      mp.setattr(task_lib.Translation, 'summarize', recording)
      last = run.train_and_evaluate(config, str(workdir))
  finally:
    logging.getLogger('absl').removeHandler(handler)
  assert last == summaries[-1]
  return TrainedRun(config, workdir, dict(zip(EVAL_STEPS, summaries)),
                    handler.messages)


def trained_run(tmp_path_factory) -> TrainedRun:
  """The session's tiny run, trained on first use (shared by modules)."""
  return _train_once(str(tmp_path_factory.getbasetemp() / 'translation'))


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  return trained_run(tmp_path_factory)


def restore(trained_: TrainedRun, which: str = 'best'):
  """``(variables, step)`` of a checkpoint, as every mode restores them."""
  task = tasks.build(trained_.config, trained_.workdir)
  return loop.restore_variables(task, trained_.workdir, which)


def _evaluate_split(config, variables, devices):
  """``(task, totals)`` of the eval split on a mesh over ``devices``."""
  task = tasks.build(config, '/nonexistent')
  mesh = parallel.make_mesh(devices)
  totals = loop.evaluate_split(
      task, loop.jit_eval_step(task, mesh),
      jax.device_put(variables, parallel.replicated(mesh)), mesh)
  return task, totals


def _final_state(config, workdir):
  task = tasks.build(config, workdir)
  template = loop.abstract_state(task, task.trainer())
  with loop.checkpointer(task, workdir, read_only=True) as ckpt:
    return jax.device_get(ckpt.restore_latest(template).state)


# Training.


def test_best_checkpoint_has_the_lowest_ensemble_l1(trained):
  task = tasks.build(trained.config, trained.workdir)
  assert task.best == BestMetric('eval/ensemble/l1', 'min', stored_as='l1')
  assert set(trained.evals[4]) == {f'eval/{o}/{m}' for o in OUTPUTS
                                   for m in ('l1', 'rmse')}
  l1 = {s: trained.evals[s]['eval/ensemble/l1'] for s in EVAL_STEPS}
  # Not a tie, so the direction matters: 'max' would keep the other step.
  assert l1[2] != l1[4]
  with loop.checkpointer(task, trained.workdir, read_only=True) as ckpt:
    assert ckpt.best_step == min(l1, key=l1.get)
    assert ckpt.best_value == min(l1.values())
    assert ckpt.latest_step == NUM_STEPS


def test_fid_off_is_said_once_naming_the_config_field(trained):
  said = [m for m in trained.warnings if 'FID and KID are off' in m]
  assert len(said) == 1  # two evaluations, one warning
  assert '--config.eval.inception_weights=PATH' in said[0]
  assert inception.WEIGHTS_URL in said[0]


@pytest.mark.slow
def test_interrupted_run_resumes_bit_identical(trained, tmp_path,
                                               monkeypatch):
  """Killed after the checkpoint of step 2, rerun: the same generator,
  critic and both Adam states as the uninterrupted run, bit for bit."""
  config = trained.config.copy_and_resolve_references()
  resumed = tmp_path / 'resumed'
  crash.train_killed_at_call(monkeypatch, config, resumed)
  task = tasks.build(config, resumed)
  with loop.checkpointer(task, resumed, read_only=True) as ckpt:
    assert ckpt.latest_step == 2
  assert run.train_and_evaluate(config, str(resumed)) == trained.evals[4]

  a = _final_state(config, trained.workdir)
  b = _final_state(config, resumed)
  assert set(a) == {'step', 'generator', 'discriminator', 'opt_g', 'opt_d'}
  assert int(a['step']) == int(b['step']) == NUM_STEPS
  jax.tree.map(np.testing.assert_array_equal, a, b)
  # Not vacuous: the steps after the resume moved both networks.
  template = loop.abstract_state(task, task.trainer())
  with loop.checkpointer(task, trained.workdir, read_only=True) as ckpt:
    at_2 = jax.device_get(ckpt.restore(2, template).state)
  for net in ('generator', 'discriminator'):
    assert not all(np.array_equal(x, y) for x, y in zip(
        jax.tree.leaves(a[net]), jax.tree.leaves(at_2[net])))
  with loop.checkpointer(task, trained.workdir, read_only=True) as c1:
    with loop.checkpointer(task, resumed, read_only=True) as c2:
      assert (c1.best_step, c1.best_value) == (c2.best_step, c2.best_value)


# Evaluation.


def test_summarize_l1_and_rmse_by_hand(tmp_path):
  task = tasks.build(tiny_config(tmp_path), tmp_path)
  # 4 images; per-image errors summed per output (branches, ensemble).
  totals = {'sums': {'l1': np.array([0.8, 0.4, 0.6]),
                     'mse': np.array([1.0, 0.36, 0.16]),
                     'count': np.float64(4)}}
  summary = task.summarize(totals)
  assert summary == pytest.approx({
      'eval/reshading/l1': 0.2, 'eval/reshading/rmse': 0.5,
      'eval/edge_texture/l1': 0.1, 'eval/edge_texture/rmse': 0.3,
      'eval/ensemble/l1': 0.15, 'eval/ensemble/rmse': 0.2}, rel=1e-12)
  assert task.format_summary(summary) == (
      'reshading L1 0.2000, edge_texture L1 0.1000, ensemble L1 0.1500')
  assert task_lib.scores_table(summary, task.output_names).splitlines() == [
      '| output | L1 | RMSE |', '|---|---:|---:|',
      '| reshading | 0.2000 | 0.5000 |',
      '| edge_texture | 0.1000 | 0.3000 |',
      '| ensemble | 0.1500 | 0.2000 |']


def _kid_by_hand(x, y):
  """100 x MMD-GAN's unbiased MMD^2 with k = (<x, y> / d + 1) ** 3."""
  m, d = x.shape
  k = lambda a, b: (a @ b.T / d + 1) ** 3
  kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
  within = kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)
  return 100 * (within / (m * (m - 1)) - 2 * kxy.sum() / m ** 2)


def test_summarize_fid_kid_by_hand_and_best_is_the_min_fid(tmp_path):
  config = with_eval(tiny_config(tmp_path),
                     inception_weights=str(tmp_path / 'never_read.pth'))
  task = tasks.build(config, tmp_path)
  assert task.best == BestMetric('eval/min_fid', 'min', stored_as='fid')
  real = np.random.default_rng(0).normal(size=(6, 3))
  # Each output is the real set shifted: equal covariances, so the FID is
  # the squared shift; the smallest is a branch's, not the ensemble's.
  shifts = np.array([[3.0, 0, 0], [0, 1.0, 0], [0, 0, 2.0]])
  fake = real[:, None] + shifts  # (N, outputs, D)
  summary = task.summarize({
      'sums': {'l1': np.ones(3), 'mse': np.ones(3), 'count': 6.0},
      'rows': {'real': real, 'fake': fake}})
  for o, (name, want) in enumerate(zip(OUTPUTS, (9.0, 1.0, 4.0))):
    np.testing.assert_allclose(summary[f'eval/{name}/fid'], want, rtol=1e-9)
    # 6 <= kid_subset_size: every subset is the whole set in some order.
    np.testing.assert_allclose(summary[f'eval/{name}/kid'],
                               _kid_by_hand(fake[:, o], real), rtol=1e-9)
  assert summary['eval/min_fid'] == summary['eval/edge_texture/fid']
  assert '| edge_texture | 0.1667 | 0.4082 | 1.0000 |' in (
      task_lib.scores_table(summary, task.output_names))


def test_official_eval_does_not_depend_on_the_eval_batch(trained):
  """Each example's dropout key is folded from its index: batch 1, 3 (one
  padding example) on one device and 4 on four give the same sums."""
  variables, step = restore(trained)
  results = {}
  for batch, devices in ((1, 1), (3, 1), (4, 4)):
    config = with_eval(trained.config, batch_size=batch)
    task, totals = _evaluate_split(config, variables,
                                   jax.devices()[:devices])
    results[batch] = totals['sums']
  for batch in (3, 4):
    assert results[batch]['count'] == results[1]['count'] == NUM_TEST
    for k in ('l1', 'mse'):
      # Up to the float32 order of the on-device sums (~2e-7 here).
      np.testing.assert_allclose(results[batch][k], results[1][k],
                                 rtol=2e-6)
  # The same numbers as the evaluation of that step during training.
  assert task.summarize({'sums': results[4]}) == trained.evals[step]
  # Not vacuous: the dropout key changes an example's translation.
  x = jnp.asarray(next(iter(task.eval_loader(
      batch_size=1, shard_index=0, shard_count=1)))['inputs'])
  x = jnp.moveaxis(x, 1, 0)
  translate = jax.jit(functools.partial(
      steps.translate, task.generator, protocol='official'))
  a = translate(variables['generator'], x, jnp.array([0]))
  b = translate(variables['generator'], x, jnp.array([1]))
  assert np.abs(np.asarray(a) - np.asarray(b)).mean() > 1e-3


def test_deterministic_protocol_is_the_generator_on_running_stats(trained):
  variables, step = restore(trained)
  config = with_eval(trained.config, protocol='deterministic')
  task, totals = _evaluate_split(config, variables, jax.devices()[:4])
  apply = jax.jit(lambda v, x: task.generator.apply(
      v, x, use_running_average=True))
  l1, mse, count = np.zeros(3), np.zeros(3), 0
  for batch in task.eval_loader(batch_size=NUM_TEST, shard_index=0,
                                shard_count=1):
    out = apply(variables['generator'], jnp.moveaxis(batch['inputs'], 1, 0))
    images = np.concatenate([out['outputs'], out['ensemble'][None]])
    diff = images.astype(np.float64) - batch['target'][None]
    valid = np.asarray(batch['valid'])
    l1 += np.abs(diff).mean(axis=(2, 3, 4))[:, valid].sum(axis=1)
    mse += np.square(diff).mean(axis=(2, 3, 4))[:, valid].sum(axis=1)
    count += valid.sum()
  sums = totals['sums']
  assert sums['count'] == count == NUM_TEST
  np.testing.assert_allclose(sums['l1'], l1, rtol=1e-5)
  np.testing.assert_allclose(sums['mse'], mse, rtol=1e-5)
  summary = task.summarize(totals)
  np.testing.assert_allclose(summary['eval/ensemble/rmse'],
                             np.sqrt(mse[2] / count), rtol=1e-5)
  # Not vacuous: the official protocol (dropout, per-image statistics)
  # gives other numbers.
  official = trained.evals[step]['eval/ensemble/l1']
  assert abs(summary['eval/ensemble/l1'] - official) > 1e-4


@pytest.mark.slow
def test_evaluation_with_fid_reports_every_output_and_the_min(
    trained, tmp_path, monkeypatch):
  """Random-weight FID Inception (tests/test_fid.py) at 75 x 75, its
  smallest input: at 299 x 299 this takes minutes on a CPU. The Frechet
  distance is taken on a fixed 8-d projection of the features, since the
  2048 x 2048 ``sqrtm`` takes half a minute per output on two cores;
  test_fid.py checks it at full size against pytorch-fid."""
  torch = pytest.importorskip('torch', reason='requirements-torch.txt')
  weights = tmp_path / inception.WEIGHTS_FILE
  # pylint: disable-next=protected-access
  torch.save(test_fid._state_dict(), weights)
  monkeypatch.setattr(inception, 'INPUT_SIZE', 75)
  projection = np.random.default_rng(0).normal(size=(inception.FEATURES, 8))
  full_fid = fid_lib.fid_from_features
  monkeypatch.setattr(fid_lib, 'fid_from_features',
                      lambda fake, real: full_fid(fake @ projection,
                                                  real @ projection))
  variables, step = restore(trained)
  workdir = tmp_path / 'work'
  checkpointing.save_variables(workdir / loop.IMPORTED_DIR,
                               jax.device_get(variables))
  config = with_eval(trained.config, inception_weights=str(weights),
                     kid_subsets=2)
  summary = run.evaluate(config, str(workdir), 'imported')

  # By hand: the 8 test examples in one batch, unsharded.
  task = tasks.build(config, workdir)
  model, inception_variables = fid_lib.load_inception(str(weights))
  (batch,) = task.eval_loader(batch_size=NUM_TEST, shard_index=0,
                              shard_count=1)
  images = jax.jit(functools.partial(
      steps.translate, task.generator, protocol='official'))(
          variables['generator'], jnp.moveaxis(batch['inputs'], 1, 0),
          batch['index'])
  features = functools.partial(fid_lib.features_of_outputs, model,
                               inception_variables)
  real = np.asarray(features(batch['target']), np.float64)
  for o, name in enumerate(OUTPUTS):
    fake = np.asarray(features(images[o]), np.float64)
    np.testing.assert_allclose(
        summary[f'eval/{name}/fid'],
        full_fid(fake @ projection, real @ projection), rtol=1e-3)
    np.testing.assert_allclose(summary[f'eval/{name}/kid'],
                               _kid_by_hand(fake, real), rtol=1e-4)
    np.testing.assert_allclose(summary[f'eval/{name}/l1'],
                               trained.evals[step][f'eval/{name}/l1'],
                               rtol=1e-6)
  fids = sorted(summary[f'eval/{o}/fid'] for o in OUTPUTS)
  # Outputs apart by more than the tolerance: none was swapped for another.
  assert all(b > 1.01 * a for a, b in zip(fids, fids[1:]))
  assert summary['eval/min_fid'] == fids[0]
  table = (workdir / 'eval' / '0' / 'scores.md').read_text()
  assert '| output | L1 | RMSE | FID | KID |' in table


# Configs.


@pytest.mark.parametrize('field, value, message', [
    ('data.target', 'reshading', r"config.data.inputs / config.data.target: "
     r"target 'reshading' is also an input \('reshading', 'edge_texture'\)"),
    ('data.inputs', ('reshading', 'shade'),
     r"config.data.inputs / config.data.target: unknown Taskonomy domain "
     r"'shade'; choose from \('rgb', 'normal'"),
    ('data.target', 'colour', r"unknown Taskonomy domain 'colour'"),
    ('eval.protocol', 'x', r"config.eval.protocol 'x': choose one of "
     r"\('official', 'deterministic'\)"),
])
def test_bad_config_fails_at_build_naming_the_value(tmp_path, field, value,
                                                    message):
  config = tiny_config(tmp_path)
  section, name = field.split('.')
  config[section][name] = value
  with pytest.raises(ValueError, match=message):
    tasks.build(config, tmp_path)
  assert not (tmp_path / 'tfds').exists()  # failed before reading data
