"""benchmarks/multitask.py: which models it trains and its Delta_m, by hand
(no training here)."""

import math

from etils import epath
import pytest

from benchmarks import multitask as bench
from configs import multitask_quickstart
from configs import nyud_predicted_depth


def test_variants_of_the_quickstart():
  config = multitask_quickstart.get_config()
  got = bench.variants(config)
  assert [name for name, *_ in got] == [
      'only semseg', 'only depth', 'only normals', 'no exchange', 'CEN']
  assert got[1][1] == (('rgb', 'depth'),)
  assert got[3][2] == 'none' and got[4][2] is None
  root = epath.Path('/tmp/root')
  single = bench.variant_config(config, got[0][1], root=root, epochs=2.0,
                                seed=3)
  assert single.optim.l1_coef == 0.0 and single.seed == 3
  assert tuple(single.optim.stage_epochs) == (2.0,)
  assert dict(single.multitask.loss_weights) == {'semseg': 1.0}
  assert single.data.data_dir == '/tmp/root/tfds'
  plain = bench.variant_config(config, got[3][1], root=root, epochs=None,
                               seed=None, exchange='none')
  assert plain.optim.l1_coef == 0.0 and plain.model.exchange == 'none'
  cen = bench.variant_config(config, got[4][1], root=root, epochs=None,
                             seed=None)
  assert cen.optim.l1_coef == config.optim.l1_coef
  assert cen.model.exchange == 'bn_threshold'


def test_single_task_models_read_real_inputs_only():
  got = dict((n, s) for n, s, _ in bench.variants(
      nyud_predicted_depth.get_config()))
  assert got['only semseg'] == (('rgb', 'semseg'),)
  assert got['CEN'][-1] == ('pred:depth', 'semseg')


def test_delta_m_over_the_single_task_models_by_hand():
  def summary(miou, acc, err, rel):
    return {'eval/semseg/ensemble/miou': miou,
            'eval/semseg/ensemble/pixel_acc': acc,
            'eval/depth/ensemble/abs_err': err,
            'eval/depth/ensemble/abs_rel': rel}
  results = {'only semseg': summary(50.0, 80.0, None, None),
             'only depth': summary(None, None, 0.4, 0.1),
             'CEN': summary(55.0, 80.0, 0.3, 0.1)}
  for r in results.values():
    for k in [k for k, v in r.items() if v is None]:
      del r[k]
  deltas = bench.delta_ms(results, ('semseg', 'depth'))
  # semseg (+10 % + 0) / 2 = 5 %; depth (+25 % + 0) / 2 = 12.5 %.
  assert deltas['CEN'] == pytest.approx((5.0 + 12.5) / 2)
  assert deltas['only semseg'] == pytest.approx(0.0)
  table = bench.score_table(results, {n: 1.0 for n in results}, deltas,
                            ('semseg', 'depth'))
  assert table.splitlines()[-1].split() == [
      'CEN', '55.00', '80.00', '0.3000', '0.1000', '+8.75', '1']
  # A zero baseline (a metric that never left 0) gives no Delta_m, not a
  # crash at the end of a long benchmark.
  results['only depth']['eval/depth/ensemble/abs_rel'] = 0.0
  assert math.isnan(bench.delta_ms(results, ('semseg', 'depth'))['CEN'])
