"""benchmarks/translation_multitask.py: which models it trains, their
configs, and the relative gain, by hand (no training here)."""

import math

from etils import epath
import pytest

from benchmarks import translation_multitask as bench
from configs import translation_multitask_quickstart

TARGETS = ('normal', 'reshading', 'depth_zbuffer')


def test_variants_and_their_configs():
  config = translation_multitask_quickstart.get_config()
  got = bench.variants(config.data.targets)
  assert got == (('normal', ('normal',), True),
                 ('reshading', ('reshading',), True),
                 ('depth_zbuffer', ('depth_zbuffer',), True),
                 (bench.MULTI, TARGETS, True),
                 (bench.NO_EXCHANGE, TARGETS, False))
  root = epath.Path('/tmp/root')
  single = bench.variant_config(config, ('normal',), root=root, epochs=2.0,
                                seed=3)
  assert single.data.target == 'normal' and tuple(single.data.targets) == ()
  assert single.optim.slim_coef == 0.0 and single.seed == 3
  assert single.optim.num_epochs == 2 and single.optim.num_steps == -1
  assert single.data.data_dir == '/tmp/root/tfds'
  cen = bench.variant_config(config, TARGETS, root=root, epochs=None,
                             seed=None)
  assert cen.data.target == '' and tuple(cen.data.targets) == TARGETS
  assert cen.optim.slim_coef == config.optim.slim_coef > 0
  assert cen.model.exchange == 'bn_threshold'
  plain = bench.variant_config(config, TARGETS, root=root, epochs=None,
                               seed=None, exchange=False)
  assert plain.model.exchange == 'none' and plain.optim.slim_coef == 0.0
  with pytest.raises(ValueError, match='at least two target domains'):
    bench.variants(('normal',))


def test_relative_gain_by_hand():
  single = {'a': {'l1': 0.2, 'rmse': 0.4}, 'b': {'l1': 0.1, 'rmse': 0.5}}
  multi = {'a': {'l1': 0.1, 'rmse': 0.4}, 'b': {'l1': 0.15, 'rmse': 0.4},
           'exchanged': {'x_a': 10.0}}
  # (0.5 + 0 - 0.5 + 0.2) / 4 = 0.05.
  assert bench.relative_gain(multi, single) == pytest.approx(5.0)
  single['b']['l1'] = 0.0
  assert math.isnan(bench.relative_gain(multi, single))


def test_score_table_rows():
  def scores(l1):
    return {'l1': l1, 'rmse': 2 * l1}
  results = {'a': {'a': scores(0.2)}, 'b': {'b': scores(0.1)},
             bench.MULTI: {'a': scores(0.1), 'b': scores(0.1),
                           'exchanged': {'rgb_a': 12.5, 'rgb_b': 0.0}},
             bench.NO_EXCHANGE: {'a': scores(0.2), 'b': scores(0.2)}}
  seconds = {'a': 10.0, 'b': 11.0, bench.MULTI: 30.0, bench.NO_EXCHANGE: 29.0}
  lines = bench.score_table(('a', 'b'), results, seconds).splitlines()
  assert lines[0].split() == ['target', 'model', 'L1', 'RMSE']
  assert lines[1].split() == ['a', 'single', 'target', '0.2000', '0.4000']
  assert lines[2].split()[-2:] == ['0.1000', '0.2000']
  assert ('multitask CEN: relative gain over single targets +25.00 %, 30 s; '
          'exchanged: rgb_a 12.5 %, rgb_b 0.0 %') in lines
  assert ('multitask, no exchange: relative gain over single targets '
          '-50.00 %, 29 s; exchanged: ') in lines
  assert lines[-1] == 'single targets: a 10 s, b 11 s'
