r"""Does fusion help? Unimodal models against CEN on ``synthetic_rgbd``.

  python -m benchmarks.fusion_synthetic --config=configs/quickstart.py

Trains, with the same config, seed and number of steps, an RGB-only, a
depth-only and an RGB+depth CEN model, and the same RGB+depth model with
exchange switched off (``'none'``: shared convs, private BN and the ensemble
alone); ``--hha`` adds RGB+HHA. Each gets its own workdir under
``--workdir_root`` (a temporary directory, deleted at the end, when unset).
It prints the test scores of every model side by side: pixel accuracy, mean
accuracy and mIoU of the ensemble output (for a single-modality model the
ensemble is its only branch), the scores of each branch of the fused
models, the fraction of bn2 channels each modality exchanges at the end,
and the per-class IoU of the ensembles.
``synthetic_rgbd`` is built so that colour alone confuses floor, wall, grey
block and grey dome, and geometry alone confuses floor with the tiles and
the grey block with the red block: only the fused model can separate all
seven classes.

The unimodal models train with ``l1_coef = 0``: the L1 penalty on the bn2
scales only selects the channels to exchange, and with one modality there is
nothing to exchange with. Any config field can be overridden, e.g.
``--config.optim.encoder_lrs='(0.02,)'``; running again with the same
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

from benchmarks import common
from cen_jax import run as run_lib
from cen_jax import tasks
from cen_jax.core import exchange_analysis
from cen_jax.tasks.segmentation import models
from cen_jax.training import loop

_CONFIG = config_flags.DEFINE_config_file(
    'config', 'configs/quickstart.py', 'Base config (configs/*.py).',
    lock_config=True)
_WORKDIR_ROOT = flags.DEFINE_string(
    'workdir_root', None,
    'Parent of one workdir per model; a temporary directory, deleted at the '
    'end, when unset.')
_EPOCHS = flags.DEFINE_float(
    'epochs', None,
    "Training epochs (one stage); default: the config's stage_epochs.")
_SEED = flags.DEFINE_integer('seed', None, "Seed; default: the config's.")
_HHA = flags.DEFINE_bool('hha', False, 'Also train an RGB+HHA CEN model.')

# (row name, modalities, exchange variant or None for the config's) of
# every model trained.
VARIANTS = (
    ('rgb', ('rgb',), None),
    ('depth', ('depth',), None),
    ('rgb+depth', ('rgb', 'depth'), None),
    ('no exchange', ('rgb', 'depth'), 'none'),
)
HHA_VARIANT = ('rgb+hha', ('rgb', 'hha'), None)
_SCORES = ('pixel_acc', 'mean_acc', 'miou')


def variant_config(base: ml_collections.ConfigDict,
                   modalities: Sequence[str], *, root: epath.Path,
                   epochs: float | None, seed: int | None,
                   exchange: str | None = None) -> ml_collections.ConfigDict:
  """``base`` for one model: its modalities, the shared data and length."""
  c = base.copy_and_resolve_references()
  c.data.modalities = tuple(modalities)
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
  if len(modalities) == 1:
    c.optim.l1_coef = 0.0
  return c


def train_variant(config: ml_collections.ConfigDict,
                  workdir: epath.Path) -> tuple[dict[str, float], float]:
  """Trains (or resumes) one model; its final test scalars and seconds.

  For several modalities the scalars also hold ``exchanged/<modality>``:
  the percentage of all bn2 channels that modality exchanges with the final
  weights.
  """
  start = time.perf_counter()
  summary = run_lib.train_and_evaluate(config, str(workdir))
  if not summary:
    # The workdir held a finished run: nothing trained, so evaluate it.
    summary = run_lib.evaluate(config, str(workdir), 'latest')
  seconds = time.perf_counter() - start
  if len(config.data.modalities) == 1:  # Nothing to exchange with.
    return summary, seconds
  task = tasks.build(config, workdir)
  variables, _ = loop.restore_variables(task, workdir, 'latest')
  fractions = exchange_analysis.overall_fractions(
      exchange_analysis.exchange_table(models.bn2_scales(variables['params']),
                                       task.model.exchange.weights))
  for name, frac in zip(config.data.modalities, fractions):
    summary[f'exchanged/{name}'] = 100 * float(frac)
  return summary, seconds


def score_table(results: dict[str, dict[str, float]],
                seconds: dict[str, float]) -> str:
  """One row per model output: pixel acc, mean acc, mIoU, train time."""
  lines = [f'{"model":<11} {"output":<9} {"pixel acc":>9} {"mean acc":>9} '
           f'{"mIoU":>7} {"time (s)":>9} {"exchanged %":>11}']
  for name, summary in results.items():
    for out in _outputs(summary):
      vals = ' '.join(f'{summary[f"eval/{out}/{k}"]:>{w}.2f}'
                      for k, w in zip(_SCORES, (9, 9, 7)))
      time_col = f'{seconds[name]:>9.0f}' if out == 'ensemble' else ' ' * 9
      exchanged = summary.get(f'exchanged/{out}')
      exchanged = '' if exchanged is None else f'{exchanged:>11.1f}'
      label = name if out == 'ensemble' else ''
      lines.append(f'{label:<11} {out:<9} {vals} {time_col} '
                   f'{exchanged}'.rstrip())
  return '\n'.join(lines)


def _outputs(summary: dict[str, float]) -> list[str]:
  """'ensemble', then the branches in input order when there are several."""
  names = list(dict.fromkeys(
      k.split('/')[1] for k in summary if k.endswith('/miou')))
  branches = [n for n in names if n != 'ensemble']
  return ['ensemble'] + (branches if len(branches) > 1 else [])


def class_table(results: dict[str, dict[str, float]]) -> str:
  """Per-class IoU of every model's ensemble output, one row per model."""
  prefix = 'eval/ensemble/iou/'
  first = next(iter(results.values()))
  classes = [k[len(prefix):] for k in first if k.startswith(prefix)]
  width = max(8, *(len(c) for c in classes))
  lines = [f'{"model":<11}' + ''.join(f' {c:>{width}}' for c in classes)]
  for name, summary in results.items():
    lines.append(f'{name:<11}' + ''.join(
        f' {summary[prefix + c]:>{width}.2f}' for c in classes))
  return '\n'.join(lines)


def header(config: ml_collections.ConfigDict, argv: Sequence[str]) -> str:
  o = config.optim
  return '\n'.join(common.run_header('benchmarks.fusion_synthetic', argv) + [
      f'data {config.data.name}, model depth {config.model.depth} width '
      f'{config.model.width}, decoder {tuple(config.model.decoder_features)}'
      f', bn {config.model.bn_mode}, dropout {config.model.dropout_rate}',
      f'{o.schedule} lr enc {tuple(o.encoder_lrs)} dec {tuple(o.decoder_lrs)}'
      f', warm-up {o.warmup_epochs} ep, batch {o.batch_size}, epochs '
      f'{tuple(o.stage_epochs)}, seed {config.seed}, l1 {o.l1_coef} (0 for '
      'one modality)',
  ])


def run(config: ml_collections.ConfigDict, root: epath.Path, *,
        epochs: float | None, seed: int | None, hha: bool
        ) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
  """Trains every variant under ``root``; (scalars, seconds) by model."""
  results, seconds = {}, {}
  for name, modalities, exchange in VARIANTS + (
      (HHA_VARIANT,) if hha else ()):
    c = variant_config(config, modalities, root=root, epochs=epochs,
                       seed=seed, exchange=exchange)
    logging.info('Training %s on %s', name, modalities)
    results[name], seconds[name] = train_variant(
        c, root / name.replace('+', '_'))
  return results, seconds


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  with tempfile.TemporaryDirectory(prefix='cen_fusion_') as tmp:
    root = epath.Path(_WORKDIR_ROOT.value or tmp)
    results, seconds = run(_CONFIG.value, root, epochs=_EPOCHS.value,
                           seed=_SEED.value, hha=_HHA.value)
    shown = variant_config(_CONFIG.value, ('rgb', 'depth'), root=root,
                           epochs=_EPOCHS.value, seed=_SEED.value)
  print('\n'.join(['', header(shown, sys.argv), '',
                   'Test scores (%), time = train + eval wall time:',
                   score_table(results, seconds), '',
                   'Per-class IoU (%) of the ensemble output:',
                   class_table(results), '']))


if __name__ == '__main__':
  app.run(main)
