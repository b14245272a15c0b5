"""RGB-D semantic segmentation as a task of the training loop.

The one module of the task that reads the config: ``config.model`` (the
network), ``config.data`` (dataset, modalities, augmentation), ``config.optim``
(the official two-group SGD with the L1 term), ``config.eval`` (batch and
test-time scales) and ``config.train.imagenet_checkpoint``. Everything is
read once, here, and handed to pure functions as explicit collaborators.

State: ``{'step', 'params', 'batch_stats', 'opt_state'}``; variables:
``{'params', 'batch_stats'}``. Evaluation accumulates one confusion matrix
per output (the M modality branches, then the ensemble) over the whole
eval split; the best checkpoint is the one with the highest ensemble mIoU.
"""

import dataclasses
import functools
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

from cen_jax.core import exchange_analysis
from cen_jax.core import kernels
from cen_jax.core import programs
from cen_jax.core import sparsity
from cen_jax.tasks.segmentation import convert
from cen_jax.tasks.segmentation import inference
from cen_jax.tasks.segmentation import input_pipeline
from cen_jax.tasks.segmentation import metrics
from cen_jax.tasks.segmentation import models
from cen_jax.tasks.segmentation import optim
from cen_jax.tasks.segmentation import report
from cen_jax.tasks.segmentation import steps
from cen_jax.training import cadence
from cen_jax.training import optimizers
from cen_jax.training.task import BestMetric

_SCORES = ('pixel_acc', 'mean_acc', 'miou')


def data_dir(config: ml_collections.ConfigDict,
             workdir: epath.PathLike) -> str:
  """``config.data.data_dir``, or ``<workdir>/tfds`` when it is empty."""
  if config.data.data_dir:
    return os.path.expanduser(config.data.data_dir)
  return str(epath.Path(workdir) / 'tfds')


def make_optimizer(optim_config: ml_collections.ConfigDict,
                   steps_per_epoch: int, *,
                   l1_groups: sparsity.Groups = None
                   ) -> tuple[optax.GradientTransformation,
                              dict[str, optax.Schedule], int]:
  """The two-group SGD of ``config.optim``; returns (tx, lr_fns, total).

  ``l1_groups``: streams that exchange among themselves (``core.sparsity``);
  None for all of them.
  """
  o = optim_config
  boundaries = np.cumsum(
      [cadence.epochs_to_steps(e, steps_per_epoch) for e in o.stage_epochs])
  total = int(boundaries[-1]) if o.num_steps <= 0 else int(o.num_steps)
  stage_starts = [int(b) for b in boundaries[:-1]]
  lr_fns = {
      group: optimizers.make_schedule(
          o.schedule, base_lrs=tuple(lrs), boundaries=stage_starts,
          total_steps=total,
          warmup_steps=cadence.epochs_to_steps(o.warmup_epochs,
                                               steps_per_epoch),
          poly_power=o.poly_power)
      for group, lrs in (('encoder', o.encoder_lrs), ('decoder', o.decoder_lrs))
  }
  tx = optim.make_optimizer(
      lr_fns, momentum=o.momentum, weight_decay=o.weight_decay,
      l1_coef=o.l1_coef, l1_scope=o.l1_scope,
      reset_steps=stage_starts if o.reset_momentum_at_stages else (),
      l1_groups=l1_groups)
  return tx, lr_fns, total


def with_imagenet_encoder(variables: Any, checkpoint: str) -> Any:
  """``variables`` with the encoder of a torchvision ResNet ``.pth`` if
  ``checkpoint`` names one (every modality's or stream's BN gets the same
  ImageNet statistics), else unchanged."""
  if not checkpoint:
    return variables
  logging.info('ImageNet initialisation of the encoder from %s', checkpoint)
  return convert.load_torchvision_resnet(checkpoint, variables)


@dataclasses.dataclass(frozen=True)
class Trainer:
  """The training side: the optimiser, its schedule and the train stream."""
  steps_per_epoch: int
  total_steps: int
  tx: optax.GradientTransformation
  lr_fns: dict[str, optax.Schedule]
  create_state: Callable[[Any], dict[str, Any]]
  train_step: Callable[..., Any]
  loader: Callable[..., Any]
  compiler_options: dict[str, Any] | None = None


class Segmentation:
  """CEN semantic segmentation, built from an experiment config.

  Attributes:
    name: ``'segmentation'``.
    best: the ensemble mIoU, higher is better.
    model: the CEN module.
    modalities: input modalities in model order.
    output_names: the modalities, then ``'ensemble'``.
    num_classes: K.
    batch_size: global training batch.
    eval_batch_size: configured eval batch.
  """
  name = 'segmentation'
  # Stored as 'miou' beside the checkpoint, as runs made before the task
  # interface stored it, so their best checkpoints keep ranking.
  best = BestMetric('eval/ensemble/miou', 'max', stored_as='miou')

  def __init__(self, config: ml_collections.ConfigDict,
               workdir: epath.PathLike):
    self.model = models.build(config.model)
    # XLA options of the train and eval steps (the CPU's conv library).
    self.compiler_options = kernels.compiler_options(self.model.kernels)
    self.modalities = tuple(config.data.modalities)
    self.output_names = self.modalities + ('ensemble',)
    self.num_classes = int(config.model.num_classes)
    self.batch_size = int(config.optim.batch_size)
    self.eval_batch_size = int(config.eval.batch_size)
    self.scales = tuple(config.eval.scales)
    self.flip = bool(config.eval.flip)
    self._data = config.data
    self._optim = config.optim
    self._data_dir = data_dir(config, workdir)
    self._imagenet_checkpoint = config.train.imagenet_checkpoint
    self.eval_step = functools.partial(
        steps.eval_step, model=self.model, num_classes=self.num_classes,
        logits_fn=self._eval_logits_fn())

  # Variables.

  def dummy_input(self, batch: int = 1, size: int = 64) -> jnp.ndarray:
    return jnp.zeros((len(self.modalities), batch, size, size, 3))

  def init_variables(self, rng: jax.Array) -> Any:
    """Random ``{'params', 'batch_stats'}``."""
    return programs.init(self.model, rng, self.dummy_input(), train=False)

  def start_variables(self, rng: jax.Array) -> Any:
    """The random init, with the ImageNet encoder if the config names one."""
    return with_imagenet_encoder(self.init_variables(rng),
                                 self._imagenet_checkpoint)

  # Data.

  def source(self, split: str):
    """A prepared split, checked against ``num_classes``."""
    src = input_pipeline.get_source(self._data.name, split,
                                    data_dir=self._data_dir)
    names = input_pipeline.class_names(src)
    if len(names) != self.num_classes:
      raise ValueError(
          f'config.model.num_classes = {self.num_classes} but dataset '
          f'{self._data.name!r} has {len(names)} classes')
    return src

  @functools.cached_property
  def _eval_source(self):
    return self.source(self._data.eval_split)

  @property
  def class_names(self) -> tuple[str, ...]:
    """The eval split's class names, in label order."""
    return input_pipeline.class_names(self._eval_source)

  def dataset_class_names(self) -> tuple[str, ...] | None:
    """The class names, or None where the dataset is not prepared here."""
    try:
      return self.class_names
    except FileNotFoundError as e:
      logging.warning('Class names unavailable, using indices: %s', e)
      return None

  # Training.

  def trainer(self) -> Trainer:
    """Reads the training split; builds the optimiser for its length."""
    train_source = self.source('train')
    d = self._data
    loader = functools.partial(
        input_pipeline.train_loader, train_source,
        modalities=self.modalities, crop_size=d.crop_size,
        scale_range=tuple(d.scale_range), shorter_side=d.shorter_side,
        worker_count=d.worker_count)
    return self.trainer_for(
        cadence.steps_per_epoch(len(train_source), self.batch_size), loader)

  def trainer_for(self, steps_per_epoch: int,
                  loader: Callable[..., Any] | None = None) -> Trainer:
    """The training side for a given epoch length, without reading data.

    For benchmarks on random batches; ``loader`` is None there.
    """
    tx, lr_fns, total = make_optimizer(self._optim, steps_per_epoch)
    return Trainer(
        steps_per_epoch=steps_per_epoch, total_steps=total, tx=tx,
        lr_fns=lr_fns,
        create_state=functools.partial(steps.init_state, tx=tx),
        train_step=functools.partial(
            steps.train_step, model=self.model, tx=tx,
            l1_coef=self._optim.l1_coef, l1_scope=self._optim.l1_scope,
            lr_fns=lr_fns, modality_names=self.modalities,
            total_steps=total),
        loader=loader, compiler_options=self.compiler_options)

  # Evaluation.

  def _eval_logits_fn(self):
    """Single-scale official protocol, or multi-scale/flip."""
    if self.scales == (1.0,) and not self.flip:
      return steps.full_res_logits
    return functools.partial(inference.model_logits_fn, scales=self.scales,
                             flip=self.flip)

  def eval_loader(self, *, batch_size: int, shard_index: int,
                  shard_count: int):
    return input_pipeline.eval_loader(
        self._eval_source, batch_size=batch_size, modalities=self.modalities,
        shard_index=shard_index, shard_count=shard_count,
        worker_count=self._data.worker_count)

  def summarize(self, totals: np.ndarray) -> dict[str, float]:
    """Scores of every output from ``(M + 1, K, K)`` confusion sums."""
    out = {}
    for name, conf in zip(self.output_names, totals):
      sc = metrics.scores(conf, class_names=self.class_names)
      for key in _SCORES:
        out[f'eval/{name}/{key}'] = float(sc[key])
      if name == 'ensemble':
        for cls, iou in sc['iou_per_class'].items():
          out[f'eval/ensemble/iou/{cls}'] = float(iou)
    return out

  def format_summary(self, summary: dict[str, float]) -> str:
    return ', '.join(f'{n} mIoU {summary[f"eval/{n}/miou"]:.2f}'
                     for n in self.output_names)

  def eval_images(self, variables: Any) -> dict[str, np.ndarray]:
    """The exchange plots as ``(1, H, W, 3)`` uint8 images.

    Only the bn2 scales are read (and copied to the host).
    """
    images = exchange_analysis.summary_images(
        models.bn2_scales(variables['params']), self.model.exchange.weights,
        self.model.exchange.threshold, self.modalities)
    return {f'exchange/{k}': v[None] for k, v in images.items()}

  def write_report(self, directory: pathlib.Path, totals: np.ndarray,
                   summary: dict[str, float]) -> str:
    del summary  # The report recomputes every score from the matrices.
    _, text = report.write_report(directory, totals, self.output_names,
                                  self.class_names)
    return text
