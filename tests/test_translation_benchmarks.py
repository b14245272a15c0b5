"""benchmarks/translation_step.py and translation_fusion.py: their helpers."""

from absl import app
from etils import epath
import pytest

from benchmarks import common
from benchmarks import translation_fusion as tf
from benchmarks import translation_step as ts
from configs import translation_quickstart

INPUTS = ('reshading', 'edge_texture')


def _scores(l1, rmse, outputs=INPUTS + ('ensemble',), **extra):
  out = {}
  for i, name in enumerate(outputs):
    out[f'eval/{name}/l1'] = l1 + i / 100
    out[f'eval/{name}/rmse'] = rmse + i / 100
  out.update(extra)
  return out


def test_score_table_by_hand():
  results = {
      'reshading': _scores(0.3, 0.4, ('reshading', 'ensemble')),
      'fused': _scores(0.1, 0.2, **{'exchanged/reshading': 12.34,
                                    'exchanged/edge_texture': 0.0}),
  }
  text = tf.score_table(results, {'reshading': 61.4, 'fused': 123.6})
  assert text.splitlines() == [
      'model     output            L1    RMSE time (s) exchanged %',
      'reshading ensemble      0.3100  0.4100       61',
      'fused     ensemble      0.1200  0.2200      124',
      '          reshading     0.1000  0.2000                 12.3',
      '          edge_texture  0.1100  0.2100                  0.0',
  ]


def test_score_table_shows_fid_and_kid_when_some_model_has_them():
  with_fid = _scores(0.1, 0.2, ('reshading', 'ensemble'),
                     **{'eval/reshading/fid': 80.125,
                        'eval/reshading/kid': 1.5,
                        'eval/ensemble/fid': 70.0, 'eval/ensemble/kid': 1.25})
  results = {'no exchange': with_fid,
             'edge_texture': _scores(0.5, 0.6, ('edge_texture', 'ensemble'))}
  text = tf.score_table(results, {'no exchange': 1.0, 'edge_texture': 2.0})
  assert text.splitlines() == [
      'model        output        L1    RMSE     FID    KID time (s) '
      'exchanged %',
      'no exchange  ensemble  0.1100  0.2100   70.00   1.25        1',
      'edge_texture ensemble  0.5100  0.6100       -      -        2',
  ]


def test_variants_and_their_configs(tmp_path):
  base = translation_quickstart.get_config()
  base.lock()
  assert tf.variants(INPUTS) == (
      ('reshading', ('reshading',), None),
      ('edge_texture', ('edge_texture',), None),
      ('fused', INPUTS, None),
      ('no exchange', INPUTS, 'none'))
  with pytest.raises(ValueError, match='two input domains'):
    tf.variants(('reshading',))
  root = epath.Path(tmp_path)
  configs = {name: tf.variant_config(base, inputs, root=root, epochs=0.5,
                                     seed=7, exchange=exchange)
             for name, inputs, exchange in tf.variants(INPUTS)}
  for name, c in configs.items():
    assert c.data.data_dir == str(root / 'tfds')  # Shared by every model.
    assert (c.optim.num_epochs, c.optim.num_steps, c.seed) == (0.5, -1, 7)
  assert configs['edge_texture'].data.inputs == ('edge_texture',)
  assert configs['edge_texture'].optim.slim_coef == 0.0
  assert configs['fused'].data.inputs == INPUTS
  assert configs['fused'].optim.slim_coef == base.optim.slim_coef > 0
  assert configs['fused'].model.exchange == 'bn_threshold'
  assert dict(configs['fused'].model.exchange_kwargs) == {'threshold': 1e-2}
  assert configs['no exchange'].model.exchange == 'none'
  assert dict(configs['no exchange'].model.exchange_kwargs) == {}
  assert configs['no exchange'].optim.slim_coef == base.optim.slim_coef
  assert tf.variant_config(base, INPUTS, root=root, epochs=3.0, seed=None
                           ).optim.num_epochs == 3
  assert tf.workdir_name('no exchange') == 'no_exchange'


def test_step_config_and_resolution():
  base = translation_quickstart.get_config()
  c = ts.bench_config(base, batch_size=8, ngf=8, num_inputs=3,
                      dtype='bfloat16')
  assert (c.optim.batch_size, c.model.ngf, c.model.dtype) == (8, 8,
                                                              'bfloat16')
  assert c.data.inputs == INPUTS + ('normal',)  # Never the target, rgb.
  assert ts.bench_config(base).data.inputs == INPUTS
  with pytest.raises(app.UsageError, match='give 1 to 9'):
    ts.input_domains(INPUTS, 'rgb', 10)
  assert ts.resolution(c, None) == (64, 64)
  assert ts.resolution(c, ['128', '64']) == (128, 64)
  with pytest.raises(app.UsageError, match='multiples of 64'):
    ts.resolution(c, ['96', '64'])
  with pytest.raises(app.UsageError, match='H,W'):
    ts.resolution(c, ['64'])


def test_step_timing_on_a_tiny_model():
  c = translation_quickstart.get_config()
  c.model.ngf = c.model.ndf = 4
  c.model.num_downs = 4
  c.model.n_layers = 2
  c.optim.batch_size = 4  # One example per fake device.
  task, rows = ts.benchmark(c, (16, 16), timing=ts.Timing(warmup=1, steps=2),
                            seed=0)
  assert list(rows) == ['train step', 'eval step']
  assert int(rows['train step']['state']['step']) == 3
  text = common.table(rows)
  lines = text.splitlines()
  assert lines[0].split() == ['train', 'step', 'eval', 'step']
  assert [line[:30].rstrip() for line in lines[1:-1]] == [
      'lower + compile (s)', '  of which lower (s)', 'step median (ms)',
      'step p90 (ms)', 'images/s', 'XLA FLOPs/step (per device)',
      'achieved FLOP/s (per device)', 'peak memory, cumulative']
  assert lines[-1].startswith('(peak memory: ')
  top = ts.header(c, (16, 16), rows['train step']['state'],
                  ts.Timing(1, 2), ['translation_step.py', '--steps=2'])
  assert 'batch 4 x M 2 (reshading, edge_texture -> rgb) x 16x16' in top
  assert task.output_names == INPUTS + ('ensemble',)
