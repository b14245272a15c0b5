r"""Does exchange between task streams help? Single-task vs multitask CEN.

  python -m benchmarks.multitask --config=configs/multitask_quickstart.py

With the same config, seed, data and number of steps, trains:

* one single-task model per task of ``config.model.streams`` (that task's
  streams with real inputs alone; ``l1_coef = 0`` where it has one stream,
  as there is nothing to exchange with);
* the multitask model with exchange switched off (``exchange='none'``,
  ``l1_coef = 0``: shared convs, private BNs, one head per task, the
  ensembles), the shared-network multitask baseline;
* the multitask CEN (the config's exchange);

and prints every task's ensemble metrics side by side, and Delta_m (the
average relative gain, %, over the single-task models, LibMTL's definition:
``cen_jax.tasks.multitask.metrics.delta_m``) of each model. Each model gets
its own workdir under ``--workdir_root`` (a temporary directory, deleted at
the end, when unset); running again with the same root resumes or
re-evaluates the runs found there. With ``configs/nyud_multitask.py`` (and
the data prepared) the same comparison runs on NYUv2.
"""

import sys
import tempfile
import time
from typing import Sequence

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
from cen_jax.tasks.multitask import metrics
from cen_jax.tasks.multitask import streams as streams_lib
from cen_jax.tasks.segmentation import models
from cen_jax.training import loop

# allow_override: the tests import this script beside the other benchmarks,
# which define flags of the same names; only the script run parses them.
_CONFIG = config_flags.DEFINE_config_file(
    'config', 'configs/multitask_quickstart.py',
    'Base multitask config (configs/*.py).', lock_config=True,
    allow_override=True)
_WORKDIR_ROOT = flags.DEFINE_string(
    'workdir_root', None,
    'Parent of one workdir per model; a temporary directory, deleted at the '
    'end, when unset.', allow_override=True)
_EPOCHS = flags.DEFINE_float(
    'epochs', None,
    "Training epochs (one stage); default: the config's stage_epochs.",
    allow_override=True)
_SEED = flags.DEFINE_integer('seed', None, "Seed; default: the config's.",
                             allow_override=True)

# Columns of the table: (task, metric, header, format).
COLUMNS = (
    ('semseg', 'miou', 'mIoU', '.2f'),
    ('semseg', 'pixel_acc', 'pix acc', '.2f'),
    ('depth', 'abs_err', 'abs err', '.4f'),
    ('depth', 'abs_rel', 'abs rel', '.4f'),
    ('depth', 'rmse', 'rmse', '.4f'),
    ('depth', 'delta1', 'd<1.25', '.4f'),
    ('normals', 'mean_angle', 'mean', '.2f'),
    ('normals', 'median_angle', 'median', '.2f'),
    ('normals', 'within_11.25', '<11.25', '.4f'),
    ('normals', 'within_22.5', '<22.5', '.4f'),
    ('normals', 'within_30', '<30', '.4f'),
)


def variants(config: ml_collections.ConfigDict
             ) -> list[tuple[str, tuple[tuple[str, str], ...], str | None]]:
  """``(name, streams, exchange or None for the config's)`` per model."""
  streams = tuple(tuple(s) for s in config.model.streams)
  task_names = tuple(dict.fromkeys(t for _, t in streams))
  # A single-task model reads real inputs only: a predicted input needs
  # another task.
  out = [(f'only {t}', tuple(s for s in streams if s[1] == t
                             and not s[0].startswith(
                                 streams_lib.PREDICTED_PREFIX)), None)
         for t in task_names]
  out.append(('no exchange', streams, 'none'))
  out.append(('CEN', streams, None))
  return out


def variant_config(base: ml_collections.ConfigDict,
                   streams: Sequence[tuple[str, str]], *, root: epath.Path,
                   epochs: float | None, seed: int | None,
                   exchange: str | None = None) -> ml_collections.ConfigDict:
  """``base`` for one model: its streams, the shared data and length."""
  c = base.copy_and_resolve_references()
  c.model.streams = tuple(streams)
  tasks_here = {t for _, t in streams}
  c.multitask.loss_weights = ml_collections.ConfigDict(
      {t: w for t, w in c.multitask.loss_weights.items() if t in tasks_here})
  c.multitask.baselines_files = ()
  c.multitask.best_metric = ''
  if exchange is not None:
    c.model.exchange = exchange
    c.model.exchange_kwargs = {}
  if not c.data.data_dir:
    # Generate the dataset once for every model instead of once per workdir.
    c.data.data_dir = str(root / 'tfds')
  if epochs is not None:
    c.optim.stage_epochs = (epochs,)
  if seed is not None:
    c.seed = seed
  if len(streams) == 1 or exchange == 'none':
    # The L1 term only selects the channels to exchange: with one stream or
    # without exchange it would switch channels off for nothing.
    c.optim.l1_coef = 0.0
  return c


def train_variant(config: ml_collections.ConfigDict,
                  workdir: epath.Path) -> tuple[dict[str, float], float]:
  """Trains (or resumes) one model; its final test scalars and seconds.

  The scalars also hold ``exchanged/<stream>``: the percentage of all bn2
  channels each stream exchanges with the final weights.
  """
  start = time.perf_counter()
  summary = run_lib.train_and_evaluate(config, str(workdir))
  if not summary:
    summary = run_lib.evaluate(config, str(workdir), 'latest')
  seconds = time.perf_counter() - start
  task = tasks.build(config, workdir)
  variables, _ = loop.restore_variables(task, workdir, 'latest')
  fractions = exchange_analysis.overall_fractions(
      exchange_analysis.exchange_table(models.bn2_scales(variables['params']),
                                       task.model.exchange.weights))
  for name, frac in zip(task.streams.names, fractions):
    summary[f'exchanged/{name}'] = 100 * float(frac)
  return summary, seconds


def ensemble_results(summary: dict[str, float], task_names: Sequence[str]
                     ) -> dict[str, dict[str, float]]:
  """``{task: {metric: value}}`` of the Delta_m metrics of the ensembles."""
  return {t: {m: summary[f'eval/{t}/ensemble/{m}']
              for m in streams_lib.DELTA_METRICS[t]}
          for t in task_names if f'eval/{t}/ensemble/'
          f'{streams_lib.DELTA_METRICS[t][0]}' in summary}


def delta_ms(results: dict[str, dict[str, float]], task_names: Sequence[str]
             ) -> dict[str, float]:
  """Delta_m of every model over the single-task models (0 for those)."""
  baselines = {}
  for t in task_names:
    baselines.update(ensemble_results(results[f'only {t}'], (t,)))
  out = {}
  for name, s in results.items():
    try:
      out[name] = metrics.delta_m(ensemble_results(s, task_names), baselines)
    except ValueError as e:  # a zero baseline (e.g. a very short run)
      logging.warning('No Delta_m for %s: %s', name, e)
      out[name] = float('nan')
  return out


def score_table(results: dict[str, dict[str, float]],
                seconds: dict[str, float], deltas: dict[str, float],
                task_names: Sequence[str]) -> str:
  """One row per model: every task's ensemble metrics, Delta_m, time."""
  cols = [c for c in COLUMNS if c[0] in task_names]
  width = 12
  lines = [f'{"model":<{width}}' + ''.join(f' {h:>8}' for *_, h, _ in cols)
           + f' {"delta_m %":>9} {"time (s)":>8}',
           f'{"":<{width}}' + ''.join(f' {t[:8]:>8}' for t, *_ in cols)]
  for name, summary in results.items():
    vals = []
    for task, metric, _, fmt in cols:
      key = f'eval/{task}/ensemble/{metric}'
      vals.append(f' {summary[key]:>8{fmt}}' if key in summary
                  else f' {"":>8}')
    lines.append(f'{name:<{width}}' + ''.join(vals)
                 + f' {deltas[name]:>+9.2f} {seconds[name]:>8.0f}')
  return '\n'.join(lines)


def exchange_table(results: dict[str, dict[str, float]]) -> str:
  lines = []
  for name, summary in results.items():
    parts = [f'{k.split("/", 1)[1]} {v:.1f}' for k, v in summary.items()
             if k.startswith('exchanged/')]
    lines.append(f'{name:<12} ' + ', '.join(parts))
  return '\n'.join(lines)


def header(config: ml_collections.ConfigDict, argv: Sequence[str]) -> str:
  o = config.optim
  return '\n'.join(common.run_header('benchmarks.multitask', argv) + [
      f'data {config.data.name}, streams {tuple(config.model.streams)}',
      f'model depth {config.model.depth} width {config.model.width}, '
      f'decoder {tuple(config.model.decoder_features)}, bn '
      f'{config.model.bn_mode}, dropout {config.model.dropout_rate}, '
      f'exchange {config.model.exchange} {dict(config.model.exchange_kwargs)}',
      f'{o.schedule} lr enc {tuple(o.encoder_lrs)} dec {tuple(o.decoder_lrs)}'
      f', warm-up {o.warmup_epochs} ep, batch {o.batch_size}, epochs '
      f'{tuple(o.stage_epochs)}, seed {config.seed}, l1 {o.l1_coef} (0 for '
      'one stream and without exchange)',
  ])


def run(config: ml_collections.ConfigDict, root: epath.Path, *,
        epochs: float | None, seed: int | None
        ) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
  """Trains every variant under ``root``; (scalars, seconds) by model."""
  results, seconds = {}, {}
  for name, streams, exchange in variants(config):
    c = variant_config(config, streams, root=root, epochs=epochs, seed=seed,
                       exchange=exchange)
    logging.info('Training %s: %s', name, streams)
    results[name], seconds[name] = train_variant(
        c, root / name.replace(' ', '_'))
  return results, seconds


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  config = _CONFIG.value
  task_names = tuple(dict.fromkeys(t for _, t in config.model.streams))
  with tempfile.TemporaryDirectory(prefix='cen_multitask_') as tmp:
    root = epath.Path(_WORKDIR_ROOT.value or tmp)
    results, seconds = run(config, root, epochs=_EPOCHS.value,
                           seed=_SEED.value)
    shown = variant_config(config, config.model.streams, root=root,
                           epochs=_EPOCHS.value, seed=_SEED.value)
  deltas = delta_ms(results, task_names)
  print('\n'.join([
      '', header(shown, sys.argv), '',
      'Test metrics of each task\'s ensemble (semseg %, depth metres, '
      'normals degrees / shares); delta_m over the single-task models; '
      'time = train + eval wall time:',
      score_table(results, seconds, deltas, task_names), '',
      'Exchanged share of bn2 channels per stream (%):',
      exchange_table(results), '']))


if __name__ == '__main__':
  app.run(main)
