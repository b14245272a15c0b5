"""Dense multitask (and multimodal multitask) CEN as a task of the loop.

Reads ``config.model`` (the network and its ``streams``), ``config.data``
(dataset, crop, workers), ``config.optim`` (the segmentation recipe's
two-group SGD with the L1 term on S disjoint bn2 slices),
``config.multitask`` (loss weights, baselines, best metric) and
``config.eval.batch_size``; everything once, here.

State and variables are the segmentation task's (``{'step', 'params',
'batch_stats', 'opt_state'}``). Evaluation accumulates, per task, one set of
sums per output (each of the task's streams, then its ensemble): confusion
matrices for ``semseg``, ``multitask.metrics`` sums for ``depth`` and
``normals``. Summaries are ``eval/<task>/<output>/<metric>`` and, with
baselines, ``eval/delta_m`` (the ensembles' average relative gain, in %).
"""

import functools
import json
import pathlib
from typing import Any, Callable, Mapping

from absl import logging
from etils import epath
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cen_jax.core import exchange_analysis
from cen_jax.core import kernels
from cen_jax.core import programs
from cen_jax.tasks.multitask import core
from cen_jax.tasks.multitask import input_pipeline
from cen_jax.tasks.multitask import metrics
from cen_jax.tasks.multitask import steps
from cen_jax.tasks.multitask import streams as streams_lib
from cen_jax.tasks.segmentation import metrics as seg_metrics
from cen_jax.tasks.segmentation import models
from cen_jax.tasks.segmentation.task import data_dir
from cen_jax.tasks.segmentation.task import make_optimizer
from cen_jax.tasks.segmentation.task import Trainer
from cen_jax.tasks.segmentation.task import with_imagenet_encoder
from cen_jax.training import cadence
from cen_jax.training.task import BestMetric

METRICS_FILE = 'metrics.json'
# The ensembles' metrics of every task, in the format baselines_files reads.
ENSEMBLE_FILE = 'ensemble_metrics.json'
_SEG_SCORES = ('miou', 'pixel_acc', 'mean_acc')


def load_baselines(files: Any, tasks: Any) -> dict[str, dict[str, float]]:
  """``{task: {metric: value}}`` merged from JSON files (later ones win).

  Each file is ``{task: {metric: value}}``, e.g. the ``ensemble_metrics.json``
  that ``--mode=eval`` writes for a single-task run.

  Raises:
    FileNotFoundError: a file is missing.
    ValueError: a file is not such JSON, or a task of the run lacks one of
      its Delta_m metrics (``streams.DELTA_METRICS``).
  """
  merged: dict[str, dict[str, float]] = {}
  for f in files:
    path = pathlib.Path(f).expanduser()
    if not path.is_file():
      raise FileNotFoundError(f'config.multitask.baselines_files: {path} '
                              'does not exist')
    try:
      data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
      raise ValueError(f'{path}: not valid JSON ({e})') from e
    if not isinstance(data, dict) or not all(
        isinstance(v, dict) for v in data.values()):
      raise ValueError(f'{path}: expected {{task: {{metric: value}}}}')
    for task, values in data.items():
      merged.setdefault(task, {}).update(
          {k: float(v) for k, v in values.items()})
  for task in tasks:
    missing = [m for m in streams_lib.DELTA_METRICS[task]
               if m not in merged.get(task, {})]
    if missing:
      raise ValueError(
          f'config.multitask.baselines_files {tuple(files)} lack the '
          f'baseline of task {task!r}: {missing}')
  return merged


class Multitask:
  """CEN over (input, task) streams with one head per task.

  Attributes:
    name: ``'multitask'``.
    best: ``eval/delta_m`` (max) with baselines, else the first task's
      primary ensemble metric; or ``config.multitask.best_metric``.
    model: the stream core (``core.StreamCore``: one CEN, or two passes).
    streams: the parsed ``config.model.streams``.
    modalities: the input modalities, in the loader's order.
    kinds: ``{task: task}`` (the task names are their kinds).
    output_names: ``{task: (its stream names..., 'ensemble')}``.
    num_classes: K of the ``semseg`` head.
  """
  name = 'multitask'

  def __init__(self, config: ml_collections.ConfigDict,
               workdir: epath.PathLike):
    self.num_classes = int(config.model.num_classes)
    self.streams = streams_lib.parse(
        config.model.streams, num_classes=self.num_classes,
        available_inputs=input_pipeline.INPUTS)
    s = self.streams
    self.model = core.StreamCore(config.model, s)
    # XLA options of the train and eval steps (the CPU's conv library).
    self.compiler_options = kernels.compiler_options(
        self.model.models[0].kernels)
    self.modalities = s.modalities
    self.kinds = {t: t for t in s.task_names}
    self.output_names = {t: s.streams_of(t) + ('ensemble',)
                         for t in s.task_names}
    mt = config.multitask
    weights = dict(mt.loss_weights or {})
    unknown = sorted(set(weights) - set(streams_lib.TASK_KINDS))
    if unknown:
      raise ValueError(
          f'config.multitask.loss_weights names unknown tasks {unknown}; '
          f'the tasks are {sorted(streams_lib.TASK_KINDS)}')
    unused = sorted(set(weights) - set(s.task_names))
    if unused:
      # So that --config.model.streams can drop a task on its own.
      logging.info('config.multitask.loss_weights of %s unused: no stream '
                   'predicts them', unused)
    self.loss_weights = {t: float(weights.get(t, 1.0)) for t in s.task_names}
    self.baselines = (load_baselines(tuple(mt.baselines_files), s.task_names)
                      if mt.baselines_files else None)
    self.best = self._best_metric(mt.best_metric)
    self.batch_size = int(config.optim.batch_size)
    self.eval_batch_size = int(config.eval.batch_size)
    self._data = config.data
    self._optim = config.optim
    self._data_dir = data_dir(config, workdir)
    self._imagenet_checkpoint = config.train.imagenet_checkpoint
    self.eval_step = functools.partial(
        steps.eval_step, model=self.model, input_index=s.input_index,
        kinds=self.kinds, output_names=self.output_names,
        num_classes=self.num_classes)

  def _best_metric(self, key: str) -> BestMetric:
    if key:
      if key == 'eval/delta_m':
        if self.baselines is None:
          raise ValueError("config.multitask.best_metric 'eval/delta_m' "
                           'needs config.multitask.baselines_files')
        return BestMetric(key, 'max')
      parts = key.split('/')
      if (len(parts) != 4 or parts[0] != 'eval'
          or parts[1] not in self.output_names
          or parts[2] not in self.output_names[parts[1]]
          or parts[3] not in metrics.HIGHER_IS_BETTER):
        raise ValueError(
            f'config.multitask.best_metric {key!r}: expected '
            "'eval/delta_m' or 'eval/<task>/<output>/<metric>' with task "
            f'in {tuple(self.output_names)}, e.g. '
            f"'eval/{self.streams.task_names[0]}/ensemble/"
            f"{streams_lib.PRIMARY_METRIC[self.streams.task_names[0]][0]}'")
      return BestMetric(key, 'max' if metrics.HIGHER_IS_BETTER[parts[3]]
                        else 'min')
    if self.baselines is not None:
      return BestMetric('eval/delta_m', 'max')
    first = self.streams.task_names[0]
    metric, mode = streams_lib.PRIMARY_METRIC[first]
    return BestMetric(f'eval/{first}/ensemble/{metric}', mode)

  # Variables.

  def dummy_input(self, batch: int = 1, size: int = 64) -> jnp.ndarray:
    return jnp.zeros((len(self.streams.names), batch, size, size, 3))

  def init_variables(self, rng: jax.Array) -> Any:
    """Random ``{'params', 'batch_stats'}``."""
    return programs.init(self.model, rng, self.dummy_input(), train=False)

  def start_variables(self, rng: jax.Array) -> Any:
    """The random init, with the ImageNet encoder if the config names one
    (every stream's BN starts from the same ImageNet statistics)."""
    return with_imagenet_encoder(self.init_variables(rng),
                                 self._imagenet_checkpoint)

  # Data.

  def source(self, split: str):
    """A prepared split, checked against ``num_classes`` for semseg."""
    src = input_pipeline.get_source(self._data.name, split,
                                    data_dir=self._data_dir)
    names = input_pipeline.class_names(src)
    if 'semseg' in self.kinds and len(names) != self.num_classes:
      raise ValueError(
          f'config.model.num_classes = {self.num_classes} but dataset '
          f'{self._data.name!r} has {len(names)} classes')
    return src

  @functools.cached_property
  def _eval_source(self):
    return self.source(self._data.eval_split)

  @property
  def class_names(self) -> tuple[str, ...]:
    return input_pipeline.class_names(self._eval_source)

  # Training.

  def trainer(self) -> Trainer:
    """Reads the training split; builds the optimiser for its length."""
    train_source = self.source('train')
    loader = functools.partial(
        input_pipeline.train_loader, train_source, inputs=self.modalities,
        crop_size=self._data.crop_size or None,
        augment=bool(self._data.get('augment', True)),
        worker_count=self._data.worker_count)
    return self.trainer_for(
        cadence.steps_per_epoch(len(train_source), self.batch_size), loader)

  def trainer_for(self, steps_per_epoch: int,
                  loader: Callable[..., Any] | None = None) -> Trainer:
    """The training side for a given epoch length, without reading data."""
    s = self.streams
    tx, lr_fns, total = make_optimizer(self._optim, steps_per_epoch,
                                       l1_groups=s.passes)
    return Trainer(
        steps_per_epoch=steps_per_epoch, total_steps=total, tx=tx,
        lr_fns=lr_fns,
        create_state=functools.partial(steps.init_state, tx=tx),
        train_step=functools.partial(
            steps.train_step, model=self.model, tx=tx,
            l1_coef=self._optim.l1_coef, l1_scope=self._optim.l1_scope,
            l1_groups=s.passes, lr_fns=lr_fns, input_index=s.input_index, stream_names=s.names,
            stream_tasks=s.tasks, kinds=self.kinds,
            loss_weights=self.loss_weights, total_steps=total),
        loader=loader, compiler_options=self.compiler_options)

  # Evaluation.

  def eval_loader(self, *, batch_size: int, shard_index: int,
                  shard_count: int):
    return input_pipeline.eval_loader(
        self._eval_source, inputs=self.modalities, batch_size=batch_size,
        shard_index=shard_index, shard_count=shard_count,
        worker_count=self._data.worker_count)

  def results(self, totals: Mapping[str, Mapping[str, Any]]
              ) -> dict[str, dict[str, dict[str, float]]]:
    """``{task: {output: {metric: value}}}`` from the summed sums."""
    out = {}
    for task, kind in self.kinds.items():
      out[task] = {}
      for name in self.output_names[task]:
        sums = totals[task][name]
        if kind == 'semseg':
          sc = seg_metrics.scores(np.asarray(sums))
          out[task][name] = {k: float(sc[k]) for k in _SEG_SCORES}
        elif kind == 'depth':
          out[task][name] = metrics.depth_metrics(sums)
        else:
          out[task][name] = metrics.normal_metrics(sums)
    return out

  def ensemble_metrics(self, results: Mapping[str, Any]
                       ) -> dict[str, dict[str, float]]:
    """Each task's ensemble metrics that enter Delta_m."""
    return {task: {m: results[task]['ensemble'][m]
                   for m in streams_lib.DELTA_METRICS[task]}
            for task in self.kinds}

  def summarize(self, totals: Any) -> dict[str, float]:
    results = self.results(totals)
    summary = {f'eval/{task}/{output}/{metric}': value
               for task, outputs in results.items()
               for output, values in outputs.items()
               for metric, value in values.items()}
    if self.baselines is not None:
      summary['eval/delta_m'] = metrics.delta_m(
          self.ensemble_metrics(results), self.baselines)
    return summary

  def format_summary(self, summary: dict[str, float]) -> str:
    parts = []
    for task in self.kinds:
      metric, _ = streams_lib.PRIMARY_METRIC[task]
      parts.append(f'{task} {metric} '
                   f'{summary[f"eval/{task}/ensemble/{metric}"]:.4g}')
    if 'eval/delta_m' in summary:
      parts.append(f'delta_m {summary["eval/delta_m"]:+.2f}%')
    return ', '.join(parts)

  def eval_images(self, variables: Any) -> dict[str, np.ndarray]:
    """The exchange plots over the streams, ``(1, H, W, 3)`` uint8."""
    images = exchange_analysis.summary_images(
        models.bn2_scales(variables['params']), self.model.exchange.weights,
        self.model.exchange.threshold, self.streams.names)
    return {f'exchange/{k}': v[None] for k, v in images.items()}

  def write_report(self, directory: pathlib.Path, totals: Any,
                   summary: dict[str, float]) -> str:
    """``metrics.json`` (every output), ``ensemble_metrics.json`` (usable
    as a baselines file) and the table that is returned."""
    results = self.results(totals)
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / METRICS_FILE).write_text(json.dumps(results, indent=2)
                                          + '\n')
    (directory / ENSEMBLE_FILE).write_text(
        json.dumps(self.ensemble_metrics(results), indent=2) + '\n')
    lines = []
    for task, outputs in results.items():
      names = list(next(iter(outputs.values())))
      lines.append(f'| {task} | ' + ' | '.join(names) + ' |')
      lines.append('|---|' + '---:|' * len(names))
      for output, values in outputs.items():
        lines.append(f'| {output} | ' + ' | '.join(
            f'{values[n]:.4f}' for n in names) + ' |')
      lines.append('')
    if 'eval/delta_m' in summary:
      lines.append(f'Delta_m of the ensembles over the baselines: '
                   f'{summary["eval/delta_m"]:+.2f} %')
    text = '\n'.join(lines).rstrip() + '\n'
    (directory / 'report.md').write_text(text)
    logging.info('Multitask report in %s', directory)
    return text
