r"""Does exchange between target domains help? Single-target models against
multitask translation with and without channel exchanging.

  python -m benchmarks.translation_multitask \
    --config=configs/translation_multitask_quickstart.py

Trains, with the same config, seed and number of steps, one model per
target domain of ``config.data.targets`` (``inputs -> target`` alone, the
official single-target network), the multitask CEN on all targets at once
(``multitask CEN``: one stream per (input, target), every conv shared,
channels exchanged over all streams, one head, ensemble and critic per
target) and the same multitask model with exchange switched off
(``multitask, no exchange``: shared convs, private InstanceNorms, no L1
term). Each gets its own workdir under ``--workdir_root`` (a temporary
directory, deleted at the end, when unset); the dataset is generated once,
in ``<workdir_root>/tfds``. It prints, per target, the test L1 and RMSE of
the [-1, 1] ensemble images of every model (FID and KID with
``--config.eval.inception_weights``), the relative gain of each multitask
model over the single-target ones, ``100 * mean over targets and metrics
of (single - multi) / single`` (positive = better; Delta_m of the
multitask-learning literature for lower-is-better metrics), the train +
eval wall time and the share of encoder InstanceNorm channels each stream
exchanges at the end.

Single-target models with one input, and the model without exchange,
train with ``optim.slim_coef = 0`` (nothing to exchange with), as in
``benchmarks/translation_fusion.py``.
Any config field can be overridden; running again with the same
``--workdir_root`` resumes (or re-evaluates) the runs found there.
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
import numpy as np

from benchmarks import common
from cen_jax import run as run_lib
from cen_jax import tasks
from cen_jax.core import exchange_analysis
from cen_jax.tasks.translation import models
from cen_jax.tasks.translation import task as task_lib
from cen_jax.training import loop

_CONFIG = config_flags.DEFINE_config_file(
    'config', 'configs/translation_multitask_quickstart.py',
    'Base config (configs/*.py) with config.data.targets.', lock_config=True,
    allow_override=True)
_WORKDIR_ROOT = flags.DEFINE_string(
    'workdir_root', None,
    'Parent of one workdir per model; a temporary directory, deleted at the '
    'end, when unset.', allow_override=True)
_EPOCHS = flags.DEFINE_float(
    'epochs', None, "Training epochs (optim.num_epochs); default: the "
    "config's.", allow_override=True)
_SEED = flags.DEFINE_integer('seed', None, "Seed; default: the config's.",
                             allow_override=True)

MULTI, NO_EXCHANGE = 'multitask CEN', 'multitask, no exchange'
METRICS = ('l1', 'rmse', 'fid', 'kid')


def variants(targets: Sequence[str]
             ) -> tuple[tuple[str, tuple[str, ...], bool], ...]:
  """``(name, targets, exchange on)`` of every model: each target alone,
  all of them with CEN, all of them without exchange."""
  targets = tuple(targets)
  if len(targets) < 2:
    raise ValueError(f'config.data.targets {targets}: multitask needs at '
                     'least two target domains')
  return tuple((t, (t,), True) for t in targets) + (
      (MULTI, targets, True), (NO_EXCHANGE, targets, False))


def variant_config(base: ml_collections.ConfigDict, targets: Sequence[str],
                   *, root: epath.Path, epochs: float | None,
                   seed: int | None, exchange: bool = True
                   ) -> ml_collections.ConfigDict:
  """``base`` for one model: its targets, the shared data and length."""
  c = common.translation_variant(base, root=root, epochs=epochs, seed=seed,
                                 exchange=None if exchange else 'none')
  targets = tuple(targets)
  if len(targets) == 1:
    c.data.target = targets[0]
    c.data.targets = ()
  else:
    c.data.target = ''
    c.data.targets = targets
  if not exchange or len(c.data.inputs) * len(targets) == 1:
    c.optim.slim_coef = 0.0  # Nothing exchanges: no reason to penalise.
  return c


def train_variant(config: ml_collections.ConfigDict, workdir: epath.Path
                  ) -> tuple[dict[str, float], float]:
  """Trains (or resumes) one model; ``{target: {metric: value}}`` of its
  ensembles, ``exchanged/<stream>`` percentages, and seconds."""
  start = time.perf_counter()
  summary = run_lib.train_and_evaluate(config, str(workdir))
  if not summary:
    summary = run_lib.evaluate(config, str(workdir), 'latest')
  seconds = time.perf_counter() - start
  task = tasks.build(config, workdir)
  out = {}
  for target in task.targets:
    prefix = f'eval/{target}/' if task.multitask else 'eval/'
    out[target] = {m: summary[f'{prefix}ensemble/{m}'] for m in METRICS
                   if f'{prefix}ensemble/{m}' in summary}
  if len(task.stream_names) > 1:
    variables, _ = loop.restore_variables(task, workdir, 'latest')
    fractions = exchange_analysis.overall_fractions(
        exchange_analysis.exchange_table(
            models.in_scales(variables['generator']['params']),
            task.generator.exchange.weights))
    out['exchanged'] = {s: 100 * float(f)
                        for s, f in zip(task.stream_names, fractions)}
  return out, seconds


def relative_gain(multi: dict[str, dict[str, float]],
                  single: dict[str, dict[str, float]]) -> float:
  """``100 * mean over (target, metric) of (single - multi) / single``,
  every metric lower-is-better; NaN when a single-target value is 0."""
  gains = [(single[t][m] - multi[t][m]) / single[t][m]
           if single[t][m] else float('nan')
           for t in single for m in single[t] if m in multi.get(t, {})]
  return 100 * float(np.mean(gains))


def score_table(targets: Sequence[str], results: dict[str, dict],
                seconds: dict[str, float]) -> str:
  """Rows: each target's single model, then the multitask ones per target;
  then the relative gains, times and exchanged shares."""
  metrics = [m for m in METRICS
             if any(m in r.get(t, {}) for r in results.values()
                    for t in targets)]
  single = {t: results[t][t] for t in targets}
  name_w = max(len(n) for n in results) + 1
  head = (f'{"target":<14} {"model":<{name_w}} '
          + ' '.join(f'{m.upper():>7}' for m in metrics))
  lines = [head]
  for t in targets:
    for name in (t, MULTI, NO_EXCHANGE):
      label = 'single target' if name == t else name
      vals = ' '.join(f'{results[name][t][m]:>7.4f}' for m in metrics)
      lines.append(f'{t if name == t else "":<14} {label:<{name_w}} {vals}')
  lines.append('')
  for name in (MULTI, NO_EXCHANGE):
    gain = relative_gain(results[name], single)
    shares = results[name].get('exchanged', {})
    shared = ', '.join(f'{s} {v:.1f} %' for s, v in shares.items())
    lines.append(f'{name}: relative gain over single targets {gain:+.2f} %, '
                 f'{seconds[name]:.0f} s; exchanged: {shared}')
  lines.append('single targets: ' + ', '.join(
      f'{t} {seconds[t]:.0f} s' for t in targets))
  return '\n'.join(lines)


def header(config: ml_collections.ConfigDict, argv: Sequence[str]) -> str:
  m, o, d = config.model, config.optim, config.data
  targets = task_lib.config_targets(d)
  return '\n'.join(common.run_header('benchmarks.translation_multitask',
                                     argv) + [
      f'data {d.name} {d.crop_size}x{d.crop_size}, {", ".join(d.inputs)} '
      f'-> {", ".join(targets)}; generator ngf {m.ngf}, num_downs '
      f'{m.num_downs}, exchange {m.exchange} {dict(m.exchange_kwargs or {})}'
      f'; critic ndf {m.ndf}, n_layers {m.n_layers}',
      f'adam lr G {o.lr_g} D {o.lr_d}, batch {o.batch_size}, epochs '
      f'{o.num_epochs}, seed {config.seed}, L1 weight {o.l1_weight}, slim '
      f'{o.slim_coef} (0 without exchange); eval protocol '
      f'{config.eval.protocol}',
  ])


def run(config: ml_collections.ConfigDict, root: epath.Path, *,
        epochs: float | None, seed: int | None
        ) -> tuple[dict[str, dict], dict[str, float]]:
  """Trains every variant under ``root``; (results, seconds) by model."""
  results, seconds = {}, {}
  for name, targets, exchange in variants(task_lib.config_targets(
      config.data)):
    c = variant_config(config, targets, root=root, epochs=epochs, seed=seed,
                       exchange=exchange)
    logging.info('Training %s: %s -> %s', name, c.data.inputs, targets)
    results[name], seconds[name] = train_variant(
        c, root / common.workdir_name(name))
  return results, seconds


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  config = _CONFIG.value
  with tempfile.TemporaryDirectory(prefix='cen_translation_mtl_') as tmp:
    root = epath.Path(_WORKDIR_ROOT.value or tmp)
    results, seconds = run(config, root, epochs=_EPOCHS.value,
                           seed=_SEED.value)
  print('\n'.join(['', header(config, sys.argv), '',
                   'Test scores of each target\'s ensemble, [-1, 1] images '
                   '(lower is better):',
                   score_table(task_lib.config_targets(config.data), results,
                               seconds), '']))


if __name__ == '__main__':
  app.run(main)
