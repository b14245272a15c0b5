"""benchmarks/compare_exchange.py: the table, and rebuilding it from disk."""

import json

from etils import epath

from benchmarks import compare_exchange as cx
from configs import quickstart

RESULTS = [
    {'variant': 'bn_threshold', 'kwargs': {'threshold': 0.02},
     'seconds': 181.4,
     'miou': {'rgb': 65.911, 'depth': 65.2, 'ensemble': 66.29},
     'exchanged': {'rgb': 50.0, 'depth': 49.96}},
    {'variant': 'my.rules:relative', 'kwargs': {}, 'seconds': None,
     'miou': {'rgb': 1.0, 'depth': 2.0, 'ensemble': 3.005},
     'exchanged': {'rgb': 0.0, 'depth': 12.5}},
]


def test_tables_by_hand():
  text, markdown, table_csv = cx.tables(RESULTS, ('rgb', 'depth'))
  assert markdown.splitlines() == [
      '| variant | hyperparameters | rgb mIoU | depth mIoU | ensemble mIoU '
      '| rgb exchanged % | depth exchanged % | time (s) |',
      '|---|---|---:|---:|---:|---:|---:|---:|',
      '| `bn_threshold` | threshold=0.02 | 65.91 | 65.20 | 66.29 | 50.0 | '
      '50.0 | 181 |',
      '| `my.rules:relative` |  | 1.00 | 2.00 | 3.00 | 0.0 | 12.5 |  |',
  ]
  assert table_csv.splitlines()[2] == (
      'my.rules:relative,,1.00,2.00,3.00,0.0,12.5,')
  assert text.splitlines()[1].split() == [
      'bn_threshold', 'threshold=0.02', '65.91', '65.20', '66.29', '50.0',
      '50.0', '181']


def test_rebuild_reads_the_saved_results_without_training(tmp_path):
  root = epath.Path(tmp_path)
  for result in RESULTS:
    workdir = root / cx.workdir_name(result['variant'])
    workdir.mkdir()
    (workdir / cx.RESULT_FILE).write_text(json.dumps(result))
  assert cx.workdir_name('my.rules:relative') == 'my.rules_relative'
  base = quickstart.get_config()
  for result in RESULTS:
    config = cx.variant_config(base, result['variant'], None, root)
    got = cx.run_variant(config, root / cx.workdir_name(result['variant']),
                         rebuild=True)
    assert got == result
  # The config's own variant keeps its hyperparameters; others their
  # rule's defaults unless given.
  assert dict(cx.variant_config(base, 'bn_threshold', None, root)
              .model.exchange_kwargs) == {'threshold': 0.02}
  assert dict(cx.variant_config(base, 'random', None, root)
              .model.exchange_kwargs) == {}
  assert dict(cx.variant_config(base, 'random', {'ratio': 0.5}, root)
              .model.exchange_kwargs) == {'ratio': 0.5}
