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


def build_models(model_config: Any) -> tuple[models.Generator,
                                             models.Discriminator]:
  """The generator and discriminator of ``config.model``."""
  c = model_config
  if c.dtype not in DTYPES:
    raise ValueError(f'Unknown dtype {c.dtype!r}; choose one of '
                     f'{list(DTYPES)}.')
  dtype = DTYPES[c.dtype]
  generator = models.Generator(
      exchange=exchange_lib.get(c.exchange, **dict(c.exchange_kwargs or {})),
      ngf=c.ngf, num_downs=c.num_downs, dropout_rate=c.dropout_rate,
      dropout_blocks=c.dropout_blocks, norm_momentum=c.norm_momentum,
      norm_epsilon=c.norm_epsilon, dtype=dtype)
  discriminator = models.Discriminator(
      ndf=c.ndf, n_layers=c.n_layers, norm_momentum=c.norm_momentum,
      norm_epsilon=c.norm_epsilon, dtype=dtype)
  return generator, discriminator


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
    best: the lowest FID over the outputs, or the lowest ensemble L1.
    generator, discriminator: the modules.
    inputs: input domains in model order; ``target``: the target domain.
    output_names: the inputs, then ``'ensemble'``.
    batch_size: global training batch.
    eval_batch_size: configured eval batch.
    protocol: ``'official'`` (dropout on, per-image statistics) or
      ``'deterministic'`` (running statistics, no dropout).
  """
  name = 'translation'

  def __init__(self, config: ml_collections.ConfigDict,
               workdir: epath.PathLike):
    self.generator, self.discriminator = build_models(config.model)
    self.inputs = tuple(config.data.inputs)
    self.target = str(config.data.target)
    input_pipeline.check_names(self.inputs, self.target)
    self.output_names = self.inputs + ('ensemble',)
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
    if self.inception_weights:
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
    return {'generator': self.generator.init(g_rng, x),
            'discriminator': self.discriminator.init(d_rng, x, x[0])}

  def start_variables(self, rng: jax.Array) -> dict[str, Any]:
    return jax.jit(self.init_variables)(rng)

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
            modality_names=self.inputs, total_steps=total),
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

  def summarize(self, totals: dict[str, Any]) -> dict[str, float]:
    """L1, RMSE and (with features) FID and KID of every output."""
    sums, rows = totals['sums'], totals.get('rows') or {}
    count = float(sums['count'])
    out = {}
    for i, name in enumerate(self.output_names):
      out[f'eval/{name}/l1'] = float(sums['l1'][i]) / count
      out[f'eval/{name}/rmse'] = math.sqrt(float(sums['mse'][i]) / count)
    if 'real' in rows:
      real = rows['real']
      rng = np.random.default_rng(int(self._eval.kid_seed))
      for i, name in enumerate(self.output_names):
        fake = rows['fake'][:, i]
        out[f'eval/{name}/fid'] = fid_lib.fid_from_features(fake, real)
        out[f'eval/{name}/kid'] = fid_lib.kid(
            fake, real, num_subsets=int(self._eval.kid_subsets),
            subset_size=int(self._eval.kid_subset_size), rng=rng)
      out['eval/min_fid'] = min(out[f'eval/{n}/fid']
                                for n in self.output_names)
    return out

  def format_summary(self, summary: dict[str, float]) -> str:
    parts = []
    for name in self.output_names:
      text = f'{name} L1 {summary[f"eval/{name}/l1"]:.4f}'
      if f'eval/{name}/fid' in summary:
        text += (f' FID {summary[f"eval/{name}/fid"]:.2f}'
                 f' KID {summary[f"eval/{name}/kid"]:.3f}')
      parts.append(text)
    return ', '.join(parts)

  def eval_images(self, variables: Any) -> dict[str, np.ndarray]:
    """The exchange plots and a preview of the first eval example."""
    g = self.generator
    images = exchange_analysis.summary_images(
        models.in_scales(variables['generator']['params']),
        g.exchange.weights, g.exchange.threshold, self.inputs)
    out = {f'exchange/{k}': v[None] for k, v in images.items()}
    out['preview'] = self.preview(variables, self._eval_source[0])[None]
    return out

  def preview(self, variables: Any, element: dict[str, Any]) -> np.ndarray:
    """``(H, W', 3)`` uint8: inputs | each output | ensemble | target."""
    batch = input_pipeline.eval_element(
        element, self.inputs, self.target, self.crop_size,
        input_pipeline.domains(self._eval_source))
    x = jnp.asarray(batch['inputs'])[:, None]
    images = _translate_jit(self.generator, self.protocol)(
        variables['generator'], x, jnp.zeros((1,), jnp.int32))[:, 0]
    row = list(batch['inputs']) + list(np.asarray(images)) + [
        batch['target']]
    return to_uint8(np.concatenate(row, axis=1))

  def write_report(self, directory: pathlib.Path, totals: dict[str, Any],
                   summary: dict[str, float]) -> str:
    """``scores.json`` and ``scores.md`` under ``directory``."""
    del totals
    directory.mkdir(parents=True, exist_ok=True)
    (directory / 'scores.json').write_text(json.dumps(
        {k: round(v, 4) for k, v in summary.items()}, indent=2) + '\n')
    text = scores_table(summary, self.output_names)
    (directory / 'scores.md').write_text(
        f'{", ".join(self.inputs)} -> {self.target}, {self.protocol} '
        f'protocol\n\n{text}\n')
    return text


@functools.lru_cache(maxsize=4)
def _translate_jit(generator, protocol):
  return jax.jit(functools.partial(steps.translate, generator,
                                   protocol=protocol))


def to_uint8(image: np.ndarray) -> np.ndarray:
  """[-1, 1] float -> uint8 0..255."""
  return np.clip(np.round((np.asarray(image) + 1) * 127.5), 0,
                 255).astype(np.uint8)


def scores_table(summary: dict[str, float], names: tuple[str, ...]) -> str:
  """A Markdown table: one row per output, L1 / RMSE / FID / KID."""
  metrics = [m for m in ('l1', 'rmse', 'fid', 'kid')
             if f'eval/{names[0]}/{m}' in summary]
  lines = ['| output | ' + ' | '.join(m.upper() for m in metrics) + ' |',
           '|---|' + '---:|' * len(metrics)]
  for name in names:
    lines.append(f'| {name} | ' + ' | '.join(
        f'{summary[f"eval/{name}/{m}"]:.4f}' for m in metrics) + ' |')
  return '\n'.join(lines)
