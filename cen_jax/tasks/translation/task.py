"""Multi-domain image translation (Taskonomy) as a task of the training loop.

The one module of the task that reads the config: ``config.model`` (the
generator and discriminator), ``config.data`` (dataset, input and target
domains, augmentation), ``config.optim`` (the official Adam pair, the L1
reconstruction weight and the L1 term on the encoder InstanceNorm scales)
and ``config.eval`` (protocol, FID/KID).

Variables: ``{'generator': {'params', 'batch_stats'}, 'discriminator':
{...}}``; state: those plus ``'step'``, ``'opt_g'`` and ``'opt_d'``.
Evaluation reports, for every branch and the ensemble, the L1 and RMSE of
the [-1, 1] images (as the official log) and, when the Inception weights
are configured, FID and KID; the best checkpoint has the lowest FID over the
outputs (the official "best FID"), or the lowest ensemble L1 without FID.

Multitask translation: ``config.data.targets`` (two or more target
domains, replacing ``config.data.target``) gives the generator one head per
target and T x M streams (``models``), one critic per target, and reports
``eval/<target>/<output>/<metric>``; the best checkpoint then has the
lowest mean over targets of the lowest FID (``eval/mean_min_fid``), or of
the ensemble L1 (``eval/mean_ensemble_l1``).
"""

import dataclasses
import functools
import json
import math
import os
import pathlib
from typing import Any, Callable

from absl import logging
from etils import epath
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from cen_jax.core import exchange as exchange_lib
from cen_jax.core import exchange_analysis
from cen_jax.core import programs
from cen_jax.core import sparsity
from cen_jax.tasks.translation import fid as fid_lib
from cen_jax.tasks.translation import input_pipeline
from cen_jax.tasks.translation import models
from cen_jax.tasks.translation import steps
from cen_jax.training import cadence
from cen_jax.training.task import BestMetric

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
_INCEPTION_HELP = (
    'FID and KID are off: config.eval.inception_weights names no file. Put '
    "pytorch-fid's pt_inception-2015-12-05-6726825d.pth (from "
    'https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/'
    'pt_inception-2015-12-05-6726825d.pth) on this machine and set '
    '--config.eval.inception_weights=PATH to turn them on.')


def data_dir(config: ml_collections.ConfigDict,
             workdir: epath.PathLike) -> str:
  """``config.data.data_dir``, or ``<workdir>/tfds`` when it is empty."""
  if config.data.data_dir:
    return os.path.expanduser(config.data.data_dir)
  return str(epath.Path(workdir) / 'tfds')


def build_models(model_config: Any, heads: tuple[str, ...] = ()
                 ) -> tuple[models.Generator, Any]:
  """The generator and discriminator of ``config.model``.

  With ``heads`` (multitask: the target domains), the generator has one
  head per target and the critic is ``models.Discriminators``.
  """
  c = model_config
  if c.dtype not in DTYPES:
    raise ValueError(f'Unknown dtype {c.dtype!r}; choose one of '
                     f'{list(DTYPES)}.')
  dtype = DTYPES[c.dtype]
  generator = models.Generator(
      exchange=exchange_lib.get(c.exchange, **dict(c.exchange_kwargs or {})),
      ngf=c.ngf, num_downs=c.num_downs, dropout_rate=c.dropout_rate,
      dropout_blocks=c.dropout_blocks, norm_momentum=c.norm_momentum,
      norm_epsilon=c.norm_epsilon, dtype=dtype, heads=tuple(heads))
  critic = dict(ndf=c.ndf, n_layers=c.n_layers, norm_momentum=c.norm_momentum,
                norm_epsilon=c.norm_epsilon, dtype=dtype)
  discriminator = (models.Discriminators(tuple(heads), **critic) if heads
                   else models.Discriminator(**critic))
  return generator, discriminator


def config_targets(data_config: Any) -> tuple[str, ...]:
  """The target domains: ``data.targets`` if given, else ``data.target``.

  Raises:
    ValueError: ``targets`` names fewer than two domains (one target is
      ``data.target``), or both fields are set.
  """
  targets = tuple(data_config.get('targets') or ())
  if not targets:
    return (str(data_config.target),)
  if len(targets) < 2:
    raise ValueError(f'config.data.targets {targets}: give two or more '
                     'target domains, or one as config.data.target')
  if data_config.get('target'):
    raise ValueError(f'config.data.target {data_config.target!r} and '
                     f'config.data.targets {targets} are both set; keep one')
  return targets


def make_optimizers(optim_config: Any
                    ) -> tuple[optax.GradientTransformation,
                               optax.GradientTransformation]:
  """The official Adam pair; the generator's adds the L1 subgradient."""
  o = optim_config
  tx_g = optax.chain(
      sparsity.add_l1_subgradient(o.slim_coef, steps.is_encoder_norm_scale,
                                  o.l1_scope),
      optax.adam(o.lr_g, b1=o.beta1, b2=o.beta2))
  tx_d = optax.adam(o.lr_d, b1=o.beta1, b2=o.beta2)
  return tx_g, tx_d


@dataclasses.dataclass(frozen=True)
class Trainer:
  """The training side: the optimisers and the train stream."""
  steps_per_epoch: int
  total_steps: int
  create_state: Callable[[Any], dict[str, Any]]
  train_step: Callable[..., Any]
  loader: Callable[..., Any]


class Translation:
  """CEN image translation, built from an experiment config.

  Attributes:
    name: ``'translation'``.
    best: the lowest FID over the outputs, or the lowest ensemble L1 (for
      several targets, their means over the targets).
    generator, discriminator: the modules.
    inputs: input domains in model order; ``target``: the target domain,
      or the tuple of them (multitask); ``targets``: always a tuple.
    multitask: more than one target.
    stream_names: the inputs, or ``'<input>_<target>'`` for each of the
      T x M streams (target-major).
    output_names: the inputs, then ``'ensemble'`` (per target).
    batch_size: global training batch.
    eval_batch_size: configured eval batch.
    protocol: ``'official'`` (dropout on, per-image statistics) or
      ``'deterministic'`` (running statistics, no dropout).
  """
  name = 'translation'

  def __init__(self, config: ml_collections.ConfigDict,
               workdir: epath.PathLike):
    self.targets = config_targets(config.data)
    self.multitask = len(self.targets) > 1
    self.target = self.targets if self.multitask else self.targets[0]
    self.inputs = tuple(config.data.inputs)
    try:
      input_pipeline.check_names(self.inputs, self.target)
    except ValueError as e:
      fields = 'config.data.inputs / ' + (
          'config.data.targets' if self.multitask else 'config.data.target')
      raise ValueError(f'{fields}: {e}') from e
    self.generator, self.discriminator = build_models(
        config.model, self.targets if self.multitask else ())
    self.output_names = self.inputs + ('ensemble',)
    self.stream_names = (tuple(f'{m}_{t}' for t in self.targets
                               for m in self.inputs)
                         if self.multitask else self.inputs)
    self.batch_size = int(config.optim.batch_size)
    self.eval_batch_size = int(config.eval.batch_size)
    self.protocol = str(config.eval.protocol)
    if self.protocol not in steps.PROTOCOLS:
      raise ValueError(f'config.eval.protocol {self.protocol!r}: choose one '
                       f'of {steps.PROTOCOLS}')
    self.crop_size = int(config.data.crop_size)
    self._data = config.data
    self._optim = config.optim
    self._eval = config.eval
    self._data_dir = data_dir(config, workdir)
    self.inception_weights = os.path.expanduser(config.eval.inception_weights)
    if self.multitask:
      self.best = (BestMetric('eval/mean_min_fid', 'min', stored_as='fid')
                   if self.inception_weights else
                   BestMetric('eval/mean_ensemble_l1', 'min',
                              stored_as='l1'))
    elif self.inception_weights:
      self.best = BestMetric('eval/min_fid', 'min', stored_as='fid')
    else:
      self.best = BestMetric('eval/ensemble/l1', 'min', stored_as='l1')

  # Variables.

  def dummy_input(self, batch: int = 1) -> jnp.ndarray:
    side = 2 ** self.generator.num_downs
    return jnp.zeros((len(self.inputs), batch, side, side, 3))

  def init_variables(self, rng: jax.Array) -> dict[str, Any]:
    """Random generator and discriminator (official N(0, 0.02) weights)."""
    g_rng, d_rng = jax.random.split(rng)
    x = self.dummy_input()
    y = jnp.zeros((len(self.targets),) + x.shape[1:]) if self.multitask \
        else x[0]
    return {'generator': programs.init(self.generator, g_rng, x),
            'discriminator': programs.init(self.discriminator, d_rng, x, y)}

  def start_variables(self, rng: jax.Array) -> dict[str, Any]:
    return self.init_variables(rng)

  # Data.

  def source(self, split: str):
    src = input_pipeline.get_source(self._data.name, split,
                                    data_dir=self._data_dir)
    input_pipeline.check_domains(src, self.inputs, self.target)
    return src

  @functools.cached_property
  def _eval_source(self):
    return self.source(self._data.eval_split)

  # Training.

  def trainer(self) -> Trainer:
    train_source = self.source('train')
    d = self._data
    loader = functools.partial(
        input_pipeline.train_loader, train_source, inputs=self.inputs,
        target=self.target, load_size=d.load_size, crop_size=d.crop_size,
        worker_count=d.worker_count)
    return self.trainer_for(
        cadence.steps_per_epoch(len(train_source), self.batch_size), loader)

  def trainer_for(self, steps_per_epoch: int,
                  loader: Callable[..., Any] | None = None) -> Trainer:
    """The training side for a given epoch length, without reading data."""
    o = self._optim
    total = (int(o.num_steps) if o.num_steps > 0 else
             cadence.epochs_to_steps(o.num_epochs, steps_per_epoch))
    tx_g, tx_d = make_optimizers(o)
    return Trainer(
        steps_per_epoch=steps_per_epoch, total_steps=total,
        create_state=functools.partial(steps.init_state, tx_g=tx_g,
                                       tx_d=tx_d),
        train_step=functools.partial(
            steps.train_step, generator=self.generator,
            discriminator=self.discriminator, tx_g=tx_g, tx_d=tx_d,
            l1_weight=o.l1_weight, slim_coef=o.slim_coef,
            modality_names=self.stream_names, total_steps=total),
        loader=loader)

  # Evaluation.

  @functools.cached_property
  def _inception(self):
    """``(module, variables)`` of the FID Inception, or None (said once)."""
    if not self.inception_weights:
      logging.warning(_INCEPTION_HELP)
      return None
    return fid_lib.load_inception(self.inception_weights)

  @property
  def eval_step(self):
    inception = None if self._inception is None else self._inception[0]
    return functools.partial(steps.eval_step, generator=self.generator,
                             protocol=self.protocol, inception=inception)

  @property
  def eval_constants(self) -> dict[str, Any] | None:
    """The FID Inception's weights, an argument of the eval step."""
    if self._inception is None:
      return None
    return {'inception': self._inception[1]}

  def eval_loader(self, *, batch_size: int, shard_index: int,
                  shard_count: int):
    return input_pipeline.eval_loader(
        self._eval_source, batch_size=batch_size, inputs=self.inputs,
        target=self.target, size=self.crop_size, shard_index=shard_index,
        shard_count=shard_count, worker_count=self._data.worker_count)

  def prefixes(self) -> tuple[str, ...]:
    """Summary key prefixes per target: ``'eval/'``, or ``'eval/<t>/'``."""
    if self.multitask:
      return tuple(f'eval/{t}/' for t in self.targets)
    return ('eval/',)

  def summarize(self, totals: dict[str, Any]) -> dict[str, float]:
    """L1, RMSE and (with features) FID and KID of every output."""
    sums, rows = totals['sums'], totals.get('rows') or {}
    count = float(sums['count'])

    def by_target(array, axis):  # One target: add its axis.
      array = np.asarray(array)
      return array if self.multitask else np.expand_dims(array, axis)
    l1, mse = by_target(sums['l1'], 0), by_target(sums['mse'], 0)
    if 'real' in rows:
      real, fake = by_target(rows['real'], 1), by_target(rows['fake'], 1)
    out = {}
    rng = np.random.default_rng(int(self._eval.kid_seed))
    for t, prefix in enumerate(self.prefixes()):
      for i, name in enumerate(self.output_names):
        out[f'{prefix}{name}/l1'] = float(l1[t, i]) / count
        out[f'{prefix}{name}/rmse'] = math.sqrt(float(mse[t, i]) / count)
      if 'real' in rows:
        for i, name in enumerate(self.output_names):
          out[f'{prefix}{name}/fid'] = fid_lib.fid_from_features(
              fake[:, t, i], real[:, t])
          out[f'{prefix}{name}/kid'] = fid_lib.kid(
              fake[:, t, i], real[:, t],
              num_subsets=int(self._eval.kid_subsets),
              subset_size=int(self._eval.kid_subset_size), rng=rng)
        out[f'{prefix}min_fid'] = min(out[f'{prefix}{n}/fid']
                                      for n in self.output_names)
    if self.multitask:
      out['eval/mean_ensemble_l1'] = float(np.mean(
          [out[f'{p}ensemble/l1'] for p in self.prefixes()]))
      if 'real' in rows:
        out['eval/mean_min_fid'] = float(np.mean(
            [out[f'{p}min_fid'] for p in self.prefixes()]))
    return out

  def format_summary(self, summary: dict[str, float]) -> str:
    parts = []
    for target, prefix in zip(self.targets, self.prefixes()):
      for name in self.output_names:
        text = f'{name} L1 {summary[f"{prefix}{name}/l1"]:.4f}'
        if self.multitask:
          text = f'{target} {text}'
        if f'{prefix}{name}/fid' in summary:
          text += (f' FID {summary[f"{prefix}{name}/fid"]:.2f}'
                   f' KID {summary[f"{prefix}{name}/kid"]:.3f}')
        parts.append(text)
    return ', '.join(parts)

  def eval_images(self, variables: Any) -> dict[str, np.ndarray]:
    """The exchange plots and a preview of the first eval example."""
    g = self.generator
    images = exchange_analysis.summary_images(
        models.in_scales(variables['generator']['params']),
        g.exchange.weights, g.exchange.threshold, self.stream_names)
    out = {f'exchange/{k}': v[None] for k, v in images.items()}
    out['preview'] = self.preview(variables, self._eval_source[0])[None]
    return out

  def preview(self, variables: Any, element: dict[str, Any]) -> np.ndarray:
    """``(H, W', 3)`` uint8: inputs | each output | ensemble | target, one
    such row per target."""
    batch = input_pipeline.eval_element(
        element, self.inputs, self.target, self.crop_size,
        input_pipeline.domains(self._eval_source))
    x = jnp.asarray(batch['inputs'])[:, None]
    images = np.asarray(_translate_jit(self.generator, self.protocol)(
        variables['generator'], x, jnp.zeros((1,), jnp.int32)))
    if not self.multitask:
      images, targets = images[None], batch['target'][None]
    else:
      targets = batch['target']
    rows = [np.concatenate(list(batch['inputs']) + list(images[t, :, 0])
                           + [targets[t]], axis=1)
            for t in range(len(self.targets))]
    return to_uint8(np.concatenate(rows, axis=0))

  def write_report(self, directory: pathlib.Path, totals: dict[str, Any],
                   summary: dict[str, float]) -> str:
    """``scores.json`` and ``scores.md`` under ``directory``."""
    del totals
    directory.mkdir(parents=True, exist_ok=True)
    (directory / 'scores.json').write_text(json.dumps(
        {k: round(v, 4) for k, v in summary.items()}, indent=2) + '\n')
    tables = []
    for target, prefix in zip(self.targets, self.prefixes()):
      table = scores_table(summary, self.output_names, prefix)
      tables.append(f'**{target}**\n\n{table}' if self.multitask else table)
    text = '\n\n'.join(tables)
    (directory / 'scores.md').write_text(
        f'{", ".join(self.inputs)} -> {", ".join(self.targets)}, '
        f'{self.protocol} protocol\n\n{text}\n')
    return text


@functools.lru_cache(maxsize=4)
def _translate_jit(generator, protocol):
  return jax.jit(functools.partial(steps.translate, generator,
                                   protocol=protocol))


def to_uint8(image: np.ndarray) -> np.ndarray:
  """[-1, 1] float -> uint8 0..255."""
  return np.clip(np.round((np.asarray(image) + 1) * 127.5), 0,
                 255).astype(np.uint8)


def scores_table(summary: dict[str, float], names: tuple[str, ...],
                 prefix: str = 'eval/') -> str:
  """A Markdown table: one row per output, L1 / RMSE / FID / KID."""
  metrics = [m for m in ('l1', 'rmse', 'fid', 'kid')
             if f'{prefix}{names[0]}/{m}' in summary]
  lines = ['| output | ' + ' | '.join(m.upper() for m in metrics) + ' |',
           '|---|' + '---:|' * len(metrics)]
  for name in names:
    lines.append(f'| {name} | ' + ' | '.join(
        f'{summary[f"{prefix}{name}/{m}"]:.4f}' for m in metrics) + ' |')
  return '\n'.join(lines)
