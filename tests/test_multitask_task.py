"""The multitask task's pieces by hand: streams, losses, sums, summaries,
baselines and the errors of bad configs (``cen_jax/tasks/multitask``)."""

import json
import math

import jax.numpy as jnp
import numpy as np
import pytest

from cen_jax import tasks
from cen_jax.tasks.multitask import metrics
from cen_jax.tasks.multitask import steps
from cen_jax.tasks.multitask import streams as streams_lib
from configs import multitask_quickstart
from configs import nyud_multimodal_multitask

INPUTS = ('rgb', 'depth')


def test_streams_of_the_multimodal_multitask_config():
  config = nyud_multimodal_multitask.get_config()
  s = streams_lib.parse(config.model.streams, num_classes=13,
                        available_inputs=INPUTS)
  assert s.names == ('rgb_semseg', 'depth_semseg', 'rgb_normals',
                     'depth_normals')
  assert s.task_names == ('semseg', 'normals')
  assert s.modalities == ('rgb', 'depth')
  assert s.heads == (('semseg', 13), ('normals', 3))
  assert s.stream_heads == (0, 0, 1, 1)
  assert s.input_index == (0, 1, 0, 1)
  assert s.streams_of('normals') == ('rgb_normals', 'depth_normals')


def test_streams_gather_each_streams_input():
  # (B=1, M=2, 1, 1, 3): modality m holds the value m + 1.
  x = jnp.stack([jnp.full((1, 1, 3), 1.0), jnp.full((1, 1, 3), 2.0)])[None]
  got = steps.stream_inputs(x, (1, 0, 0))
  assert got.shape == (3, 1, 1, 1, 3)
  np.testing.assert_array_equal(got[:, 0, 0, 0, 0], [2.0, 1.0, 1.0])


@pytest.mark.parametrize('streams, message', [
    ((), 'config.model.streams is empty'),
    ((('rgb', 'edges'),), r"unknown task 'edges'.*\['depth', 'normals', "
                          r"'semseg'\]"),
    ((('hha', 'semseg'),), r"input 'hha'.*not provided by the data; it "
                           r"provides \('rgb', 'depth'\)"),
    ((('rgb', 'depth'), ('rgb', 'depth')), 'appears twice'),
    (('rgb',), 'is not an \\(input, task\\) pair'),
])
def test_bad_streams_are_named(streams, message):
  with pytest.raises(ValueError, match=message):
    streams_lib.parse(streams, num_classes=7, available_inputs=INPUTS)


def _batch(h=4, w=4):
  label = np.zeros((1, h, w), np.int32)
  label[0, 0, 0] = 255
  depth = np.full((1, h, w), 2.0, np.float32)
  depth[0, 0, :2] = 0.0  # missing
  normal = np.zeros((1, h, w, 3), np.float32)
  normal[..., 2] = 1.0
  normal[0, 1, :, :] = [1.0, 0.0, 0.0]  # a row at 90 degrees
  normal[0, 3, 3] = 0.0  # missing
  return {'label': jnp.asarray(label), 'depth': jnp.asarray(depth),
          'normal': jnp.asarray(normal), 'valid': jnp.array([True])}


def test_task_losses_by_hand():
  batch = _batch()
  # Constant outputs at 1/4 resolution (1 x 1): the bilinear resize to 4 x 4
  # keeps them constant.
  logits = jnp.zeros((1, 1, 1, 7))
  # Uniform logits over 7 classes: CE = log 7 on the 15 labelled pixels.
  assert float(steps.task_loss('semseg', logits, batch)) == pytest.approx(
      math.log(7), rel=1e-6)
  # Depth 3 everywhere vs 2 on the 14 valid pixels: L1 = 1.
  depth = jnp.full((1, 1, 1, 1), 3.0)
  assert float(steps.task_loss('depth', depth, batch)) == pytest.approx(1.0)
  # Normal (0, 0, 5) -> (0, 0, 1): cos 1 on 11 pixels, 0 on the 4 of the
  # row at 90 degrees (the 16th pixel is missing): 1 - 11/15.
  normal = jnp.array([0.0, 0.0, 5.0]).reshape(1, 1, 1, 3)
  assert float(steps.task_loss('normals', normal, batch)) == pytest.approx(
      1 - 11 / 15, rel=1e-6)


def test_eval_sums_count_only_valid_examples():
  one = _batch()
  batch = {k: jnp.concatenate([v, v]) for k, v in one.items()}
  batch['valid'] = jnp.array([True, False])  # the second is padding
  depth = jnp.full((2, 4, 4, 1), 3.0)
  sums = steps.eval_sums('depth', depth, batch, num_classes=7)
  assert int(sums['count']) == 14
  assert float(sums['abs_err']) == pytest.approx(14.0)
  assert float(sums['abs_rel']) == pytest.approx(7.0)
  assert int(sums['delta1']) == 0  # 3/2 = 1.5 > 1.25
  normal = jnp.zeros((2, 4, 4, 3)).at[..., 2].set(1.0)
  sums = steps.eval_sums('normals', normal, batch, num_classes=7)
  assert int(sums['count']) == 15
  assert float(sums['angle']) == pytest.approx(4 * 90.0, rel=1e-5)
  assert int(sums['within_11.25']) == 11
  logits = jnp.zeros((2, 4, 4, 7)).at[..., 0].set(1.0)  # class 0 everywhere
  conf = np.asarray(steps.eval_sums('semseg', logits, batch, num_classes=7))
  assert conf[0, 0] == 15 and conf.sum() == 15


def _task(tmp_path, **multitask):
  config = multitask_quickstart.get_config()
  config.data.data_dir = str(tmp_path / 'tfds')
  for k, v in multitask.items():
    config.multitask[k] = v
  return tasks.build(config, tmp_path)


def _totals():
  """Totals of a 3-task run: every output with the same sums."""
  conf = np.zeros((7, 7), np.int64)
  conf[0, 0], conf[0, 1], conf[1, 1] = 6, 2, 2  # miou (6/8 + 2/4) / 2
  depth = {'count': 4, 'abs_err': 2.0, 'abs_rel': 1.0, 'sq_err': 4.0,
           'delta1': 3}
  hist = np.zeros(18000, np.int64)
  hist[1000] = 2  # 10 degrees
  hist[2000] = 2  # 20 degrees
  normals = {'count': 4, 'angle': 60.0, 'histogram': hist,
             'within_11.25': 2, 'within_22.5': 4, 'within_30': 4}
  return {'semseg': {n: conf for n in ('rgb_semseg', 'ensemble')},
          'depth': {n: depth for n in ('rgb_depth', 'ensemble')},
          'normals': {n: normals for n in ('rgb_normals', 'ensemble')}}


def test_summary_and_delta_m_by_hand(tmp_path):
  baselines = {'semseg': {'miou': 50.0, 'pixel_acc': 80.0},
               'depth': {'abs_err': 0.25, 'abs_rel': 0.25},
               'normals': {'mean_angle': 15.0, 'median_angle': 15.0,
                           'within_11.25': 0.5, 'within_22.5': 1.0,
                           'within_30': 1.0}}
  path = tmp_path / 'base.json'
  path.write_text(json.dumps(baselines))
  task = _task(tmp_path, baselines_files=(str(path),))
  assert task.best.key == 'eval/delta_m' and task.best.mode == 'max'
  summary = task.summarize(_totals())
  assert summary['eval/semseg/ensemble/miou'] == pytest.approx(62.5)
  assert summary['eval/semseg/rgb_semseg/pixel_acc'] == pytest.approx(80.0)
  assert summary['eval/depth/ensemble/abs_err'] == pytest.approx(0.5)
  assert summary['eval/depth/ensemble/rmse'] == pytest.approx(1.0)
  assert summary['eval/depth/ensemble/delta1'] == pytest.approx(0.75)
  assert summary['eval/normals/ensemble/mean_angle'] == pytest.approx(15.0)
  assert summary['eval/normals/ensemble/within_11.25'] == pytest.approx(0.5)
  # semseg: (+25 % + 0 %) / 2; depth: (abs_err -100 %, abs_rel 0) / 2;
  # normals: only the median moves, 15 -> 10.01 (lower is better): its
  # +33.27 % over 5 metrics.
  normals = 100 * (15.0 - 10.01) / 15.0 / 5
  assert summary['eval/delta_m'] == pytest.approx(
      (12.5 - 50.0 + normals) / 3)
  assert 'delta_m -10.28%' in task.format_summary(summary)
  text = task.write_report(tmp_path / 'report', _totals(), summary)
  assert '| ensemble | 62.5000 |' in text
  written = json.loads((tmp_path / 'report' /
                        'ensemble_metrics.json').read_text())
  assert written['depth'] == {'abs_err': 0.5, 'abs_rel': 0.25}
  # What eval writes reads back as a baselines file: Delta_m 0 against it.
  again = _task(tmp_path, baselines_files=(
      str(tmp_path / 'report' / 'ensemble_metrics.json'),))
  assert again.summarize(_totals())['eval/delta_m'] == pytest.approx(0.0)


def test_best_metric_without_baselines_and_by_name(tmp_path):
  task = _task(tmp_path)
  assert (task.best.key, task.best.mode) == ('eval/semseg/ensemble/miou',
                                             'max')
  task = _task(tmp_path, best_metric='eval/depth/rgb_depth/rmse')
  assert (task.best.key, task.best.mode) == ('eval/depth/rgb_depth/rmse',
                                             'min')
  summary = task.summarize(_totals())
  assert 'eval/delta_m' not in summary
  assert set(summary) >= {task.best.key}


@pytest.mark.parametrize('field, value, message', [
    ('best_metric', 'eval/delta_m', 'needs config.multitask.baselines_files'),
    ('best_metric', 'eval/edges/ensemble/miou', "expected 'eval/delta_m'"),
    ('baselines_files', ('/no/such.json',), r'/no/such.json does not exist'),
])
def test_bad_multitask_fields_are_named(tmp_path, field, value, message):
  with pytest.raises((ValueError, FileNotFoundError), match=message):
    _task(tmp_path, **{field: value})


def test_incomplete_baselines_and_unknown_loss_weights_are_named(tmp_path):
  path = tmp_path / 'base.json'
  path.write_text(json.dumps({'semseg': {'miou': 50.0}}))
  with pytest.raises(ValueError, match=r"task 'semseg': \['pixel_acc'\]"):
    _task(tmp_path, baselines_files=(str(path),))
  path.write_text('{not json')
  with pytest.raises(ValueError, match='base.json: not valid JSON'):
    _task(tmp_path, baselines_files=(str(path),))
  config = nyud_multimodal_multitask.get_config()
  config.multitask.loss_weights['semseq'] = 2.0
  with pytest.raises(ValueError, match=r"loss_weights names unknown tasks "
                     r"\['semseq'\]"):
    tasks.build(config, tmp_path)
  # A weight of a known task that no stream predicts is left unused, so
  # that overriding the streams alone drops a task.
  config = nyud_multimodal_multitask.get_config()
  config.multitask.loss_weights['depth'] = 2.0
  assert tasks.build(config, tmp_path).loss_weights == {'semseg': 1.0,
                                                        'normals': 1.0}


def test_normal_metrics_median_of_the_hand_totals():
  got = metrics.normal_metrics(_totals()['normals']['ensemble'])
  # Half the 4 pixels are reached at the end of the 10-degree bin.
  assert got['median_angle'] == pytest.approx(10.01)
