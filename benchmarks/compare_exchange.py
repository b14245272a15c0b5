r"""Compare exchange variants: same data, seed and budget, one table.

  python -m benchmarks.compare_exchange --config=configs/quickstart.py \
    --variants=none,bn_threshold,random,random_per_step,annealed_threshold,\
soft_threshold,examples.exchange_rules:relative_threshold

Trains one model per variant (a built-in name or a rule's import path,
``package.module:rule``) from the same config, seed and number of steps
(``synthetic_rgbd`` with the quickstart config; any dataset by config),
evaluates each on the test split and prints one table: every output's mIoU
(each modality branch and the ensemble), the share of exchange-site channels
each modality exchanges with the final weights, and the train + eval wall
time. The table is also written as ``compare_exchange.md`` and
``compare_exchange.csv`` under ``--workdir_root``.

Each variant trains in its own workdir under ``--workdir_root`` and leaves
``compare.json`` there; running again resumes unfinished runs, and
``--rebuild`` only reads the workdirs (evaluating a finished run that has no
``compare.json``) to print and write the table without training.

Hyperparameters: a variant that is the config's own exchange keeps
``config.model.exchange_kwargs``; the others use their rule's defaults,
unless ``--kwargs`` gives them, as JSON:
``--kwargs='{"random": {"ratio": 0.5}}'``.
"""

import csv
import io
import json
import re
import sys
import time
from typing import Any, Sequence

from absl import app
from absl import flags
from absl import logging
from etils import epath
import ml_collections
from ml_collections import config_flags

from benchmarks import common
from cen_jax import run as run_lib
from cen_jax import tasks
from cen_jax.core import exchange_analysis
from cen_jax.tasks.segmentation import models
from cen_jax.training import loop

_CONFIG = config_flags.DEFINE_config_file(
    'config', 'configs/quickstart.py', 'Base config (configs/*.py).',
    lock_config=True)
_VARIANTS = flags.DEFINE_list(
    'variants', ['none', 'bn_threshold', 'random'],
    'Exchange variants: built-in names or package.module:rule.')
_KWARGS = flags.DEFINE_string(
    'kwargs', '{}', 'JSON: {variant: {hyperparameter: value}}.')
_WORKDIR_ROOT = flags.DEFINE_string(
    'workdir_root', 'runs/compare_exchange',
    'Parent of one workdir per variant; the tables are written here.')
_REBUILD = flags.DEFINE_bool(
    'rebuild', False, 'Only read the existing workdirs; train nothing.')

RESULT_FILE = 'compare.json'


def workdir_name(variant: str) -> str:
  """A directory name for a variant: ``pkg.mod:rule`` -> ``pkg.mod_rule``."""
  return re.sub(r'[^A-Za-z0-9_.-]', '_', variant)


def variant_config(base: ml_collections.ConfigDict, variant: str,
                   kwargs: dict[str, Any] | None,
                   root: epath.Path) -> ml_collections.ConfigDict:
  """``base`` with ``variant``'s exchange and the shared dataset."""
  c = base.copy_and_resolve_references()
  if kwargs is None:
    kwargs = (dict(base.model.exchange_kwargs or {})
              if variant == base.model.exchange else {})
  c.model.exchange = variant
  c.model.exchange_kwargs = dict(kwargs)
  if not c.data.data_dir:
    # Generate the dataset once for every variant.
    c.data.data_dir = str(root / 'tfds')
  return c


def exchanged_percent(config: ml_collections.ConfigDict,
                      workdir: epath.Path) -> dict[str, float]:
  """Per modality, % of all bn2 channels the final weights exchange."""
  task = tasks.build(config, workdir)
  variables, _ = loop.restore_variables(task, workdir, 'latest')
  table = exchange_analysis.exchange_table(
      models.bn2_scales(variables['params']), task.model.exchange.weights)
  fractions = exchange_analysis.overall_fractions(table)
  return {m: 100 * float(f) for m, f in zip(task.modalities, fractions)}


def result_of(config: ml_collections.ConfigDict, workdir: epath.Path,
              seconds: float | None, summary: dict[str, float]
              ) -> dict[str, Any]:
  """What the table needs of one run, as written to ``compare.json``."""
  return {
      'variant': config.model.exchange,
      'kwargs': dict(config.model.exchange_kwargs),
      'seconds': seconds,
      'miou': {k.split('/')[1]: v for k, v in summary.items()
               if k.endswith('/miou')},
      'exchanged': exchanged_percent(config, workdir),
  }


def run_variant(config: ml_collections.ConfigDict, workdir: epath.Path, *,
                rebuild: bool) -> dict[str, Any]:
  """Trains (or resumes, or only reads) one variant's run."""
  saved = workdir / RESULT_FILE
  previous = json.loads(saved.read_text()) if saved.exists() else None
  summary = None
  if not rebuild:
    start = time.perf_counter()
    summary = run_lib.train_and_evaluate(config, str(workdir))
    seconds = time.perf_counter() - start
  if not summary:  # Nothing trained: a finished run.
    if previous is not None:
      return previous
    logging.info('No %s in %s: evaluating its latest checkpoint', RESULT_FILE,
                 workdir)
    summary, seconds = run_lib.evaluate(config, str(workdir), 'latest'), None
  result = result_of(config, workdir, seconds, summary)
  saved.write_text(json.dumps(result, indent=2) + '\n')
  return result


def _row(result: dict[str, Any], outputs: Sequence[str],
         modalities: Sequence[str]) -> list[str]:
  seconds = result['seconds']
  kwargs = ', '.join(f'{k}={v}' for k, v in sorted(result['kwargs'].items()))
  return ([result['variant'], kwargs]
          + [f'{result["miou"][o]:.2f}' for o in outputs]
          + [f'{result["exchanged"].get(m, 0.0):.1f}' for m in modalities]
          + ['' if seconds is None else f'{seconds:.0f}'])


def tables(results: Sequence[dict[str, Any]],
           modalities: Sequence[str]) -> tuple[str, str, str]:
  """``(console text, Markdown, CSV)`` of the results."""
  outputs = list(modalities) + ['ensemble']
  header = (['variant', 'hyperparameters']
            + [f'{o} mIoU' for o in outputs]
            + [f'{m} exchanged %' for m in modalities] + ['time (s)'])
  rows = [_row(r, outputs, modalities) for r in results]
  widths = [max(len(h), *(len(r[i]) for r in rows))
            for i, h in enumerate(header)]
  text = '\n'.join('  '.join(c.ljust(w) if i < 2 else c.rjust(w)
                             for i, (c, w) in enumerate(zip(line, widths)))
                   for line in [header] + rows)
  markdown = '\n'.join(
      ['| ' + ' | '.join(header) + ' |',
       '|' + '---|' * 2 + '---:|' * (len(header) - 2)]
      + ['| ' + ' | '.join(f'`{r[0]}`' if i == 0 else c
                           for i, c in enumerate(r)) + ' |' for r in rows])
  buffer = io.StringIO()
  csv.writer(buffer, lineterminator='\n').writerows([header] + rows)
  return text, markdown, buffer.getvalue()


def header_lines(config: ml_collections.ConfigDict,
                 argv: Sequence[str]) -> str:
  o = config.optim
  return '\n'.join(common.run_header('benchmarks.compare_exchange', argv) + [
      f'data {config.data.name} {tuple(config.data.modalities)}, model depth '
      f'{config.model.depth} width {config.model.width}, batch '
      f'{o.batch_size}, epochs {tuple(o.stage_epochs)}, l1 {o.l1_coef}, '
      f'seed {config.seed}',
  ])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  try:
    kwargs = json.loads(_KWARGS.value)
  except json.JSONDecodeError as e:
    raise app.UsageError(f'--kwargs is not JSON: {e}') from e
  unknown = sorted(set(kwargs) - set(_VARIANTS.value))
  if unknown:
    raise app.UsageError(f'--kwargs names variants not in --variants: '
                         f'{unknown}')
  root = epath.Path(_WORKDIR_ROOT.value)
  root.mkdir(parents=True, exist_ok=True)
  results = []
  for variant in _VARIANTS.value:
    config = variant_config(_CONFIG.value, variant, kwargs.get(variant), root)
    logging.info('Variant %s %s', variant, dict(config.model.exchange_kwargs))
    results.append(run_variant(config, root / workdir_name(variant),
                               rebuild=_REBUILD.value))
  text, markdown, table_csv = tables(results, _CONFIG.value.data.modalities)
  (root / 'compare_exchange.md').write_text(markdown + '\n')
  (root / 'compare_exchange.csv').write_text(table_csv)
  print('\n'.join(['', header_lines(_CONFIG.value, sys.argv), '',
                   'Test mIoU (%), exchanged share of the bn2 channels at '
                   'the end, train + eval wall time:', text, '',
                   f'written: {root / "compare_exchange.md"}, '
                   f'{root / "compare_exchange.csv"}', '']))


if __name__ == '__main__':
  app.run(main)
