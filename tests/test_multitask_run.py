"""The multitask task end to end and its modes: training, resume, eval files,
Delta_m against a run's own metrics, predict, analyze, export, import_torch.

One tiny three-stream CEN (RGB -> semseg, depth, normals; width 8) is trained
for 4 steps on the built-in ``synthetic_mtl/tiny`` (32 x 32, 16 train / 8
test) once per session, evaluated and checkpointed at steps 2 and 4.
"""

import functools
import json
import pathlib
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image
import pytest

from cen_jax import run
from cen_jax import tasks
from cen_jax.tasks.multitask import input_pipeline
from cen_jax.tasks.multitask import modes
from cen_jax.tasks.multitask import steps
from cen_jax.tasks.multitask import task as task_lib
from cen_jax.tasks.segmentation import export
from cen_jax.training import loop
from configs import multitask_quickstart
from tests import crash

NUM_STEPS = 4
EVAL_STEPS = (2, 4)


def tiny_config(root: pathlib.Path) -> ml_collections.ConfigDict:
  c = multitask_quickstart.get_config()
  c.data.name = 'synthetic_mtl/tiny'
  c.data.data_dir = str(pathlib.Path(root) / 'tfds')
  c.model.width = 8
  c.model.decoder_features = (16, 8)
  c.optim.batch_size = 4  # one per fake device; 4 steps per epoch
  c.optim.num_steps = NUM_STEPS
  c.train.log_every_steps = 1
  del c.train.eval_every_epochs  # an int field; steps 2 and 4 need 0.5
  c.train.eval_every_epochs = 0.5
  c.train.checkpoint_every_steps = 2
  c.eval.batch_size = 4
  return c


class TrainedRun(NamedTuple):
  config: ml_collections.ConfigDict
  workdir: pathlib.Path
  evals: dict[int, dict[str, float]]


@functools.lru_cache(maxsize=None)
def _train_once(root: str) -> TrainedRun:
  root = pathlib.Path(root)
  config = tiny_config(root)
  workdir = root / 'work'
  summaries = []
  real = task_lib.Multitask.summarize

  def recording(self, totals):
    summaries.append(real(self, totals))
    return summaries[-1]

  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(task_lib.Multitask, 'summarize', recording)
    last = run.train_and_evaluate(config, str(workdir))
  assert last == summaries[-1]
  return TrainedRun(config, workdir, dict(zip(EVAL_STEPS, summaries)))


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  return _train_once(str(tmp_path_factory.getbasetemp() / 'multitask'))


def _task(trained_):
  return tasks.build(trained_.config, trained_.workdir)


def test_training_reports_every_task_and_ranks_by_semseg_miou(trained):
  summary = trained.evals[4]
  for task, metric in (('semseg', 'miou'), ('depth', 'abs_rel'),
                       ('normals', 'within_30')):
    for output in (f'rgb_{task}', 'ensemble'):
      assert np.isfinite(summary[f'eval/{task}/{output}/{metric}'])
  # One stream per task: its ensemble is that stream (softmax of one alpha).
  assert summary['eval/depth/ensemble/rmse'] == pytest.approx(
      summary['eval/depth/rgb_depth/rmse'], rel=1e-6)
  task = _task(trained)
  best = max(EVAL_STEPS,
             key=lambda s: trained.evals[s]['eval/semseg/ensemble/miou'])
  with loop.checkpointer(task, trained.workdir, read_only=True) as ckpt:
    assert ckpt.best_step == best
    assert ckpt.best_value == pytest.approx(
        trained.evals[best]['eval/semseg/ensemble/miou'])


def test_eval_files_and_delta_m_against_the_runs_own_metrics(trained,
                                                            tmp_path):
  summary = run.evaluate(trained.config, str(trained.workdir), 'latest')
  assert summary == pytest.approx(trained.evals[4])
  eval_dir = trained.workdir / 'eval' / str(NUM_STEPS)
  written = json.loads((eval_dir / task_lib.METRICS_FILE).read_text())
  assert written['normals']['rgb_normals']['mean_angle'] == pytest.approx(
      summary['eval/normals/rgb_normals/mean_angle'])
  config = trained.config.copy_and_resolve_references()
  config.multitask.baselines_files = (str(eval_dir / task_lib.ENSEMBLE_FILE),)
  again = run.evaluate(config, str(trained.workdir), 'latest')
  assert again['eval/delta_m'] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.slow
def test_interrupted_run_resumes_bit_identical(trained, tmp_path,
                                               monkeypatch):
  config = trained.config.copy_and_resolve_references()
  resumed = tmp_path / 'resumed'
  crash.train_killed_at_call(monkeypatch, config, resumed)
  assert run.train_and_evaluate(config, str(resumed)) == trained.evals[4]
  task = tasks.build(config, resumed)
  a, _ = loop.restore_variables(task, trained.workdir, 'latest')
  b, _ = loop.restore_variables(task, resumed, 'latest')
  jax.tree.map(np.testing.assert_array_equal, a, b)


def _folder(root: pathlib.Path, n: int = 2) -> list[np.ndarray]:
  """``root/rgb/<i>.png`` from the tiny test split; the images in [0, 1]."""
  src = input_pipeline.get_source('synthetic_mtl/tiny', 'test',
                                  data_dir=root.parent / 'tfds')
  (root / 'rgb').mkdir(parents=True)
  images = []
  for i in range(n):
    rgb = np.round(np.asarray(src[i]['image']) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(root / 'rgb' / f'{i}.png')
    images.append(rgb.astype(np.float32) / 255.0)
  return images


def test_encodings_by_hand():
  depth = modes.encode('depth', np.full((1, 1, 1), 1.2345))
  assert np.asarray(depth).dtype == np.uint16
  assert np.asarray(depth)[0, 0] == 1234  # round(1234.5) to even
  negative = modes.encode('depth', np.full((1, 1, 1), -0.5))
  assert np.asarray(negative)[0, 0] == 0
  normal = modes.encode('normals', np.array([[[0.0, 0.0, 2.0]]]))
  np.testing.assert_array_equal(np.asarray(normal)[0, 0], [128, 128, 255])
  seg = modes.encode('semseg', np.array([[[0.1, 0.9, 0.3]]]))
  assert np.asarray(seg)[0, 0] == 1


def test_predict_writes_each_tasks_ensemble(trained, tmp_path):
  folder = trained.workdir.parent / 'predict_in'
  images = _folder(folder)
  out = tmp_path / 'pred'
  written = run.predict(trained.config, str(trained.workdir), str(folder),
                        str(out), checkpoint='best', output='ensemble',
                        crop_to_rgb=False)
  assert sorted(p.relative_to(out).as_posix() for p in written) == [
      'depth/0.png', 'depth/1.png', 'normals/0.png', 'normals/1.png',
      'semseg/0.png', 'semseg/1.png']
  task = _task(trained)
  variables, _ = loop.restore_variables(task, trained.workdir, 'best')
  x = input_pipeline.model_inputs({'image': images[1]}, ('rgb',))[None]
  preds = steps.predictions(
      task.model, variables,
      steps.stream_inputs(jnp.asarray(x), task.streams.input_index),
      (32, 32))
  seg = np.asarray(Image.open(out / 'semseg' / '1.png'))
  np.testing.assert_array_equal(seg, np.argmax(preds['semseg'][-1, 0], -1))
  depth = np.asarray(Image.open(out / 'depth' / '1.png'))
  # Millimetres, rounded; a negative prediction is written as 0.
  np.testing.assert_allclose(
      depth / 1000.0, np.maximum(preds['depth'][-1, 0, ..., 0], 0.0),
      atol=6e-4)
  # One stream's output: only its task is written.
  only = run.predict(trained.config, str(trained.workdir), str(folder),
                     str(tmp_path / 'one'), checkpoint='best',
                     output='rgb_depth', crop_to_rgb=False)
  assert {p.parent.name for p in only} == {'depth'}
  with pytest.raises(ValueError, match=r"unknown output 'hha'.*'ensemble'"):
    run.predict(trained.config, str(trained.workdir), str(folder),
                str(tmp_path / 'x'), output='hha')


def test_predict_names_missing_and_mismatched_depth(tmp_path):
  (tmp_path / 'rgb').mkdir()
  Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(tmp_path / 'rgb/a.png')
  with pytest.raises(FileNotFoundError, match=r'rgb/a.png has no depth'):
    modes.find_examples(str(tmp_path), ('rgb', 'depth'))
  (tmp_path / 'depth').mkdir()
  Image.fromarray(np.zeros((5, 6), np.uint16)).save(tmp_path / 'depth/a.png')
  [paths] = modes.find_examples(str(tmp_path), ('rgb', 'depth'))
  with pytest.raises(ValueError, match=r'depth/a.png: depth is \(5, 6\) but '
                     r'.*rgb/a.png is \(4, 6\)'):
    modes.load_sample(paths)
  with pytest.raises(FileNotFoundError, match='no such folder'):
    modes.find_examples(str(tmp_path / 'nowhere'), ('rgb',))


def test_analyze_lists_every_stream(trained, tmp_path):
  paths = run.analyze(trained.config, str(trained.workdir),
                      str(tmp_path / 'analysis'), checkpoint='latest')
  table = pathlib.Path(paths['table']).read_text()
  for name in ('rgb_semseg', 'rgb_depth', 'rgb_normals'):
    assert name in table


def test_export_round_trip_equals_the_ensembles(trained, tmp_path):
  paths = run.export_model(trained.config, str(trained.workdir),
                           str(tmp_path / 'export'), height=32, width=32,
                           batch=None, checkpoint='latest',
                           platforms=('cpu',))
  exported = export.load_export(paths['export'])
  task = _task(trained)
  variables, _ = loop.restore_variables(task, trained.workdir, 'latest')
  x = jax.random.normal(jax.random.key(0), (1, 2, 32, 32, 3))
  got = exported.call(x)
  want = jax.jit(modes.inference_fn(task))(variables, x)
  assert set(got) == {'semseg', 'depth', 'normals'}
  for t in got:
    np.testing.assert_allclose(got[t], want[t], rtol=1e-5, atol=1e-5)
  spec = json.loads(pathlib.Path(paths['spec']).read_text())
  assert spec['output']['semseg']['shape'] == ['B', 32, 32, 7]
  assert spec['input']['modalities'] == ['rgb']


def test_import_torch_is_refused_with_the_reason(trained, tmp_path):
  with pytest.raises(ValueError, match='publishes no multitask checkpoints'):
    run.import_torch(trained.config, str(tmp_path), '/some/model.pth')


def test_predicted_depth_trains_evaluates_and_predicts_from_rgb_alone(
    trained, tmp_path):
  config = tiny_config(tmp_path)
  config.data.data_dir = trained.config.data.data_dir
  config.model.streams = (('rgb', 'depth'), ('rgb', 'semseg'),
                          ('pred:depth', 'semseg'))
  config.optim.num_steps = 2
  workdir = tmp_path / 'work'
  summary = run.train_and_evaluate(config, str(workdir))
  assert set(k.split('/')[2] for k in summary if k.startswith(
      'eval/semseg/')) == {'rgb_semseg', 'pred_depth_semseg', 'ensemble'}
  assert not any(k.startswith('eval/normals') for k in summary)
  folder = trained.workdir.parent / 'predict_rgb_only'
  if not folder.exists():
    _folder(folder, n=1)
  written = run.predict(config, str(workdir), str(folder),
                        str(tmp_path / 'pred'), checkpoint='latest')
  assert sorted(p.relative_to(tmp_path / 'pred').as_posix()
                for p in written) == ['depth/0.png', 'semseg/0.png']
