r"""Does fusion help translation? Single-input models against CEN.

  python -m benchmarks.translation_fusion \
    --config=configs/translation_quickstart.py

The translation counterpart of ``benchmarks/fusion_synthetic.py``. Trains,
with the same config, seed and number of steps, one model per input domain
of ``config.data.inputs`` (``reshading`` alone, ``edge_texture`` alone with
the quickstart config), the CEN model on all of them (``fused``) and the
same model with exchange switched off (``no exchange``: shared convs,
private InstanceNorms and the ensemble alone). Each gets its own workdir
under ``--workdir_root`` (a temporary directory, deleted at the end, when
unset); the dataset is generated once, in ``<workdir_root>/tfds``. It
prints the test L1 and RMSE of the [-1, 1] images of every model's outputs
(the ensemble, and each branch of the fused models; for a single-input
model the ensemble is its only branch), FID and KID (x 100) when
``--config.eval.inception_weights`` names the Inception weights, the train
+ eval wall time, and the share of the encoder InstanceNorm channels (the
exchange sites) each input exchanges with the final weights.

On ``synthetic_taskonomy`` the RGB is a per-pixel function of shading and
texture edges together, while either alone leaves the brightness or the
paint a guess (``data/synthetic_translation.py``), so only a model that
sees both can be exact.

The single-input models train with ``optim.slim_coef = 0``: the L1 penalty
on the encoder IN scales only selects the channels to exchange, and with
one input there is nothing to exchange with. Any config field can be
overridden, e.g. ``--config.optim.lr_g=2e-4``; running again with the same
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
from cen_jax.tasks.translation import models
from cen_jax.training import loop

# allow_override: the tests import this script beside the other benchmarks,
# which define flags of the same names; only the script run parses them.
_CONFIG = config_flags.DEFINE_config_file(
    'config', 'configs/translation_quickstart.py',
    'Base config (configs/*.py).', lock_config=True, allow_override=True)
_WORKDIR_ROOT = flags.DEFINE_string(
    'workdir_root', None,
    'Parent of one workdir per model; a temporary directory, deleted at the '
    'end, when unset.', allow_override=True)
_EPOCHS = flags.DEFINE_float(
    'epochs', None, "Training epochs (optim.num_epochs); default: the "
    "config's.",
    allow_override=True)
_SEED = flags.DEFINE_integer('seed', None, "Seed; default: the config's.",
                             allow_override=True)

FUSED, NO_EXCHANGE = 'fused', 'no exchange'
# (column, width, format) of the scores, in table order; FID and KID only
# when some model has them.
_SCORES = (('l1', 'L1', 7, '.4f'), ('rmse', 'RMSE', 7, '.4f'),
           ('fid', 'FID', 7, '.2f'), ('kid', 'KID', 6, '.2f'))


def variants(inputs: Sequence[str]
             ) -> tuple[tuple[str, tuple[str, ...], str | None], ...]:
  """``(name, inputs, exchange or None for the config's)`` of every model:
  each input alone, all of them with CEN, all of them without exchange."""
  inputs = tuple(inputs)
  if len(inputs) < 2:
    raise ValueError(f'config.data.inputs {inputs}: fusion needs at least '
                     'two input domains')
  return tuple((name, (name,), None) for name in inputs) + (
      (FUSED, inputs, None), (NO_EXCHANGE, inputs, 'none'))


def variant_config(base: ml_collections.ConfigDict,
                   inputs: Sequence[str], *, root: epath.Path,
                   epochs: float | None, seed: int | None,
                   exchange: str | None = None) -> ml_collections.ConfigDict:
  """``base`` for one model: its inputs, the shared data and length."""
  c = common.translation_variant(base, root=root, epochs=epochs, seed=seed,
                                 exchange=exchange)
  c.data.inputs = tuple(inputs)
  if len(inputs) == 1:
    c.optim.slim_coef = 0.0
  return c


workdir_name = common.workdir_name


def train_variant(config: ml_collections.ConfigDict,
                  workdir: epath.Path) -> tuple[dict[str, float], float]:
  """Trains (or resumes) one model; its final test scalars and seconds.

  For several inputs the scalars also hold ``exchanged/<input>``: the
  percentage of all encoder IN channels (the exchange sites) that input
  exchanges with the final weights.
  """
  start = time.perf_counter()
  summary = run_lib.train_and_evaluate(config, str(workdir))
  if not summary:
    # The workdir held a finished run: nothing trained, so evaluate it.
    summary = run_lib.evaluate(config, str(workdir), 'latest')
  seconds = time.perf_counter() - start
  if len(config.data.inputs) == 1:  # Nothing to exchange with.
    return summary, seconds
  task = tasks.build(config, workdir)
  variables, _ = loop.restore_variables(task, workdir, 'latest')
  fractions = exchange_analysis.overall_fractions(
      exchange_analysis.exchange_table(
          models.in_scales(variables['generator']['params']),
          task.generator.exchange.weights))
  for name, frac in zip(config.data.inputs, fractions):
    summary[f'exchanged/{name}'] = 100 * float(frac)
  return summary, seconds


def score_table(results: dict[str, dict[str, float]],
                seconds: dict[str, float]) -> str:
  """One row per model output: L1, RMSE, [FID, KID], time, exchanged %."""
  scores = [s for s in _SCORES if s[0] in ('l1', 'rmse') or any(
      k.endswith(f'/{s[0]}') for r in results.values() for k in r)]
  rows = [(name, out) for name, summary in results.items()
          for out in _outputs(summary)]
  name_w = max(5, *(len(n) for n in results))
  out_w = max(6, *(len(o) for _, o in rows))
  lines = [f'{"model":<{name_w}} {"output":<{out_w}} ' + ' '.join(
      f'{label:>{w}}' for _, label, w, _ in scores)
           + f' {"time (s)":>8} {"exchanged %":>11}']
  for name, out in rows:
    summary = results[name]
    vals = ' '.join(_cell(summary.get(f'eval/{out}/{key}'), w, fmt)
                    for key, _, w, fmt in scores)
    time_col = f'{seconds[name]:>8.0f}' if out == 'ensemble' else ' ' * 8
    exchanged = summary.get(f'exchanged/{out}')
    exchanged = '' if exchanged is None else f'{exchanged:>11.1f}'
    label = name if out == 'ensemble' else ''
    lines.append(f'{label:<{name_w}} {out:<{out_w}} {vals} {time_col} '
                 f'{exchanged}'.rstrip())
  return '\n'.join(lines)


def _cell(value: float | None, width: int, fmt: str) -> str:
  return f'{"-":>{width}}' if value is None else f'{value:>{width}{fmt}}'


def _outputs(summary: dict[str, float]) -> list[str]:
  """'ensemble', then the branches in input order when there are several."""
  names = list(dict.fromkeys(
      k.split('/')[1] for k in summary
      if k.startswith('eval/') and k.endswith('/l1')))
  branches = [n for n in names if n != 'ensemble']
  return ['ensemble'] + (branches if len(branches) > 1 else [])


def header(config: ml_collections.ConfigDict, argv: Sequence[str]) -> str:
  m, o, d = config.model, config.optim, config.data
  kwargs = dict(m.exchange_kwargs or {})
  return '\n'.join(common.run_header('benchmarks.translation_fusion', argv) + [
      f'data {d.name} {d.crop_size}x{d.crop_size}, {", ".join(d.inputs)} '
      f'-> {d.target}; generator ngf {m.ngf}, num_downs {m.num_downs}, '
      f'exchange {m.exchange} {kwargs}; critic ndf {m.ndf}, n_layers '
      f'{m.n_layers}',
      f'adam lr G {o.lr_g} D {o.lr_d}, betas ({o.beta1}, {o.beta2}), batch '
      f'{o.batch_size}, epochs {o.num_epochs}, seed {config.seed}, L1 '
      f'weight {o.l1_weight}, slim {o.slim_coef} (0 for one input); eval '
      f'protocol {config.eval.protocol}',
  ])


def run(config: ml_collections.ConfigDict, root: epath.Path, *,
        epochs: float | None, seed: int | None
        ) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
  """Trains every variant under ``root``; (scalars, seconds) by model."""
  results, seconds = {}, {}
  for name, inputs, exchange in variants(config.data.inputs):
    c = variant_config(config, inputs, root=root, epochs=epochs, seed=seed,
                       exchange=exchange)
    logging.info('Training %s on %s', name, inputs)
    results[name], seconds[name] = train_variant(c, root / workdir_name(name))
  return results, seconds


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  with tempfile.TemporaryDirectory(prefix='cen_translation_fusion_') as tmp:
    root = epath.Path(_WORKDIR_ROOT.value or tmp)
    results, seconds = run(_CONFIG.value, root, epochs=_EPOCHS.value,
                           seed=_SEED.value)
    shown = variant_config(_CONFIG.value, _CONFIG.value.data.inputs,
                           root=root, epochs=_EPOCHS.value, seed=_SEED.value)
  print('\n'.join(['', header(shown, sys.argv), '',
                   'Test scores of the [-1, 1] images (lower is better), '
                   'time = train + eval wall time,',
                   'exchanged = % of the encoder IN channels that input '
                   'takes from the others at the end:',
                   score_table(results, seconds), '']))


if __name__ == '__main__':
  app.run(main)
