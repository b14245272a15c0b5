"""Training and evaluation loops; the only library module that reads configs.

``train_and_evaluate`` trains with the official recipe (or the modern options
the config selects), evaluates every output on the whole test split, keeps a
rolling checkpoint for resume and the best checkpoint by ensemble mIoU, and
resumes on its own from the workdir.
"""

import dataclasses
import functools
import os
from typing import Any, Iterator

from absl import logging
from clu import metric_writers
from clu import parameter_overview
from clu import periodic_actions
from etils import epath
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from cen_jax import analysis
from cen_jax import cadence
from cen_jax import checkpointing
from cen_jax import convert
from cen_jax import exchange
from cen_jax import input_pipeline
from cen_jax import metrics
from cen_jax import models
from cen_jax import optim
from cen_jax import parallel
from cen_jax import steps

IMPORTED_DIR = 'checkpoints/imported'
# Flush the on-device int32 confusion sums to int64 on the host this often,
# long before 2^31 pixels can land in one cell.
_CONF_FLUSH_BATCHES = 64


@dataclasses.dataclass
class Setup:
  """Everything built from the config once, shared by train and eval."""
  config: ml_collections.ConfigDict
  mesh: jax.sharding.Mesh
  model: Any
  tx: optax.GradientTransformation
  lr_fns: dict[str, optax.Schedule]
  total_steps: int
  steps_per_epoch: int
  train_source: Any
  eval_source: Any
  class_names: tuple[str, ...]
  output_names: tuple[str, ...]


def data_dir(config: ml_collections.ConfigDict, workdir: epath.Path) -> str:
  """``config.data.data_dir``, or ``<workdir>/tfds`` when it is empty."""
  if config.data.data_dir:
    return os.path.expanduser(config.data.data_dir)
  return str(workdir / 'tfds')


def _sources(config, workdir):
  d = data_dir(config, workdir)
  train = input_pipeline.get_source(config.data.name, 'train', data_dir=d)
  test = input_pipeline.get_source(config.data.name, config.data.eval_split,
                                   data_dir=d)
  names = input_pipeline.class_names(train)
  if len(names) != config.model.num_classes:
    raise ValueError(
        f'config.model.num_classes = {config.model.num_classes} but dataset '
        f'{config.data.name!r} has {len(names)} classes')
  return train, test, names


def make_optimizer(config: ml_collections.ConfigDict, steps_per_epoch: int):
  """The two-group SGD from ``config.optim``; returns (tx, lr_fns, total)."""
  o = config.optim
  boundaries = np.cumsum(
      [cadence.epochs_to_steps(e, steps_per_epoch) for e in o.stage_epochs])
  total = int(boundaries[-1]) if o.num_steps <= 0 else int(o.num_steps)
  stage_starts = [int(b) for b in boundaries[:-1]]
  lr_fns = {
      group: optim.make_schedule(
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
      reset_steps=stage_starts if o.reset_momentum_at_stages else ())
  return tx, lr_fns, total


def setup(config: ml_collections.ConfigDict, workdir: epath.Path) -> Setup:
  mesh = parallel.make_mesh()
  parallel.check_divisible(config.optim.batch_size, mesh, 'optim.batch_size')
  train_source, eval_source, names = _sources(config, workdir)
  per_epoch = cadence.steps_per_epoch(len(train_source),
                                      config.optim.batch_size)
  tx, lr_fns, total = make_optimizer(config, per_epoch)
  return Setup(config, mesh, models.build(config.model), tx, lr_fns, total,
               per_epoch, train_source, eval_source, names,
               tuple(config.data.modalities) + ('ensemble',))


def model_setup(config: ml_collections.ConfigDict) -> Setup:
  """A ``Setup`` without data, enough to restore checkpoints.

  For the modes that use a trained model on inputs of their own (predict,
  analyze, export), on machines where the dataset may not be prepared. The
  optimiser is built for one step per epoch: only its state's structure
  matters for a restore, and that does not depend on the schedule.
  """
  mesh = parallel.make_mesh()
  tx, lr_fns, total = make_optimizer(config, 1)
  return Setup(config, mesh, models.build(config.model), tx, lr_fns, total,
               1, None, None, (), tuple(config.data.modalities) + ('ensemble',))


def _dummy_shape(config) -> tuple[int, ...]:
  return (len(config.data.modalities), 1, 64, 64, 3)


def start_variables(s: Setup, workdir: epath.Path, rng: jax.Array) -> Any:
  """Imported official weights, else ImageNet, else the random init."""
  imported = workdir / IMPORTED_DIR
  if imported.exists():
    logging.info('Starting from imported weights in %s', imported)
    return checkpointing.load_variables(imported)
  variables = jax.jit(functools.partial(s.model.init, train=False))(
      rng, jnp.zeros(_dummy_shape(s.config)))
  path = s.config.train.imagenet_checkpoint
  if path:
    logging.info('ImageNet initialisation of the encoder from %s', path)
    variables = convert.load_torchvision_resnet(path, variables)
  return variables


def create_state(s: Setup, variables: Any) -> steps.State:
  init = functools.partial(steps.init_state, s.model, s.tx,
                           input_shape=_dummy_shape(s.config))
  state_fn = jax.jit(lambda v: init(None, variables=v),
                     out_shardings=parallel.replicated(s.mesh))
  return state_fn(variables)


def jit_train_step(s: Setup):
  """The sharded, donating, jitted train step."""
  step_fn = functools.partial(
      steps.train_step, model=s.model, tx=s.tx,
      l1_coef=s.config.optim.l1_coef, l1_scope=s.config.optim.l1_scope,
      lr_fns=s.lr_fns, mask_fn=exchange_mask_fn(s.config))
  rep = parallel.replicated(s.mesh)
  return jax.jit(step_fn,
                 in_shardings=(rep, parallel.batch_sharded(s.mesh), rep),
                 out_shardings=(rep, rep), donate_argnums=0)


def exchange_mask_fn(config):
  return exchange.get_mask_fn(config.model.exchange,
                              **dict(config.model.exchange_kwargs or {}))


def jit_eval_step(s: Setup):
  logits_fn = eval_logits_fn(s.config)
  step_fn = functools.partial(steps.eval_step, model=s.model,
                              num_classes=s.config.model.num_classes,
                              logits_fn=logits_fn)
  rep = parallel.replicated(s.mesh)
  return jax.jit(step_fn, in_shardings=(rep, parallel.batch_sharded(s.mesh)),
                 out_shardings=rep)


def eval_logits_fn(config):
  """Single-scale official protocol, or multi-scale/flip from the config."""
  scales = tuple(config.eval.scales)
  if scales == (1.0,) and not config.eval.flip:
    return steps.full_res_logits
  from cen_jax import inference  # pylint: disable=g-import-not-at-top
  return functools.partial(inference.model_logits_fn, scales=scales,
                           flip=config.eval.flip)


def eval_batch_size(config, mesh) -> int:
  """The configured eval batch, rounded up to fill every device."""
  size = config.eval.batch_size
  return -(-size // mesh.size) * mesh.size


def evaluate_split(s: Setup, eval_fn, state: steps.State) -> np.ndarray:
  """Confusion matrices ``(M + 1, K, K)`` int64 over the whole eval split."""
  batch = parallel.local_batch_size(eval_batch_size(s.config, s.mesh))
  loader = input_pipeline.eval_loader(
      s.eval_source, batch_size=batch, modalities=s.config.data.modalities,
      shard_index=jax.process_index(), shard_count=jax.process_count(),
      worker_count=s.config.data.worker_count)
  total = np.zeros((len(s.output_names),) + (s.config.model.num_classes,) * 2,
                   np.int64)
  pending = None
  for i, local in enumerate(loader):
    conf = eval_fn(state, parallel.global_batch(local, s.mesh))
    pending = conf if pending is None else pending + conf
    if (i + 1) % _CONF_FLUSH_BATCHES == 0:
      total += np.asarray(pending, np.int64)
      pending = None
  if pending is not None:
    total += np.asarray(pending, np.int64)
  return total


def eval_summary(s: Setup, conf: np.ndarray) -> dict[str, float]:
  """Scalars for every output; per-class IoU for the ensemble."""
  out = {}
  for name, c in zip(s.output_names, conf):
    sc = metrics.scores(c, class_names=s.class_names)
    for key in ('pixel_acc', 'mean_acc', 'miou'):
      out[f'eval/{name}/{key}'] = float(sc[key])
    if name == 'ensemble':
      for cls, iou in sc['iou_per_class'].items():
        out[f'eval/ensemble/iou/{cls}'] = float(iou)
  return out


def _check_finite(pending: list[tuple[int, jax.Array]]) -> None:
  """Raises on the first non-finite loss; ``pending`` holds (step, loss)."""
  for step, loss in pending:
    if not np.isfinite(float(loss)):
      raise FloatingPointError(
          f'Non-finite training loss {float(loss)} at step {step}; training '
          'stopped. The last good checkpoint is kept in the workdir.')
  pending.clear()


def _train_scalars(s: Setup, window: list[dict[str, Any]]) -> dict[str, float]:
  """Means over the logging window, one scalar per named quantity."""
  mean = jax.tree.map(lambda *x: np.mean(np.stack(x), axis=0),
                      *jax.device_get(window))
  mods = s.config.data.modalities
  out = {f'train/{k}': float(mean[k])
         for k in ('loss', 'ce_total', 'ce_ensemble', 'l1', 'lr_encoder',
                   'lr_decoder')}
  for m, name in enumerate(mods):
    out[f'train/ce_{name}'] = float(mean['ce_modality'][m])
    out[f'train/alpha_{name}'] = float(mean['alpha'][m])
    out[f'train/exchanged_{name}'] = float(mean['exchanged'][m])
    for stage, frac in enumerate(mean['exchanged_per_stage'][:, m]):
      out[f'train/exchanged_{name}_layer{stage + 1}'] = float(frac)
  return out


def _train_loader(s: Setup):
  c = s.config
  return input_pipeline.train_loader(
      s.train_source, batch_size=parallel.local_batch_size(c.optim.batch_size),
      seed=c.seed, modalities=c.data.modalities, crop_size=c.data.crop_size,
      scale_range=tuple(c.data.scale_range),
      shorter_side=c.data.shorter_side, shard_index=jax.process_index(),
      shard_count=jax.process_count(), worker_count=c.data.worker_count)


def _resume(s: Setup, ckpt: checkpointing.Checkpointer, workdir: epath.Path,
            rng: jax.Array) -> tuple[steps.State, Iterator, int]:
  """The latest checkpoint with its data position, or a fresh start."""
  train_iter = iter(_train_loader(s))
  template = jax.eval_shape(
      lambda: create_state(s, jax.eval_shape(
          functools.partial(s.model.init, train=False), rng,
          jnp.zeros(_dummy_shape(s.config)))))
  rep = parallel.replicated(s.mesh)
  template = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep),
      template)
  restored = ckpt.restore_latest(template)
  if restored is None:
    state = create_state(s, start_variables(s, workdir, rng))
    return state, train_iter, 0
  logging.info('Resuming from step %d', restored.step)
  if restored.data_state is not None:
    train_iter.set_state(restored.data_state)
  return restored.state, train_iter, restored.step


def exchange_threshold(config: ml_collections.ConfigDict) -> float:
  """The |gamma| threshold to mark on plots (2e-2 for variants without)."""
  return float(dict(config.model.exchange_kwargs or {}).get('threshold',
                                                            2e-2))


def exchange_images(config: ml_collections.ConfigDict,
                    params: Any) -> dict[str, np.ndarray]:
  """The exchange plots of ``analysis`` as ``(1, H, W, 3)`` uint8 images.

  Only the bn2 scales are read (and copied to the host), not all of
  ``params``.
  """
  images = analysis.summary_images(
      params, exchange_mask_fn(config),
      exchange_threshold(config), tuple(config.data.modalities))
  return {f'exchange/{k}': v[None] for k, v in images.items()}


def _run_eval(s, eval_fn, state, step, writer, ckpt) -> dict[str, float]:
  summary = eval_summary(s, evaluate_split(s, eval_fn, state))
  writer.write_scalars(step, summary)
  writer.write_images(step, exchange_images(s.config, state['params']))
  logging.info('step %d: %s', step, ', '.join(
      f'{n} mIoU {summary[f"eval/{n}/miou"]:.2f}' for n in s.output_names))
  if ckpt.save_best(step, state, summary['eval/ensemble/miou']):
    logging.info('New best ensemble mIoU %.2f at step %d',
                 summary['eval/ensemble/miou'], step)
  return summary


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> dict[str, float]:
  """Trains and evaluates; resumes from ``workdir`` if it holds a run.

  Returns:
    The last evaluation's scalars (empty if no evaluation ran).
  """
  workdir = epath.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  checkpointing.write_config_json(workdir, config.to_dict())
  s = setup(config, workdir)
  init_rng, dropout_rng = jax.random.split(jax.random.key(config.seed))
  writer = metric_writers.create_default_writer(
      workdir, just_logging=jax.process_index() > 0)
  t = config.train
  every = cadence.Cadence(
      s.total_steps, t.log_every_steps,
      cadence.epochs_to_steps(t.eval_every_epochs, s.steps_per_epoch),
      t.checkpoint_every_steps)
  summary = {}
  with checkpointing.Checkpointer(workdir, keep_latest=t.keep_checkpoints
                                  ) as ckpt:
    state, train_iter, step = _resume(s, ckpt, workdir, init_rng)
    if step == 0:
      parameter_overview.log_parameter_overview(state['params'])
      writer.write_hparams(_flat_hparams(config))
    train_fn, eval_fn = jit_train_step(s), jit_eval_step(s)
    progress = periodic_actions.ReportProgress(
        num_train_steps=s.total_steps, writer=writer,
        every_steps=t.log_every_steps)
    window, pending = [], []
    while step < s.total_steps:
      batch = parallel.global_batch(next(train_iter), s.mesh)
      state, step_metrics = train_fn(state, batch, dropout_rng)
      step += 1
      window.append(step_metrics)
      pending.append((step, step_metrics['loss']))
      progress(step)
      if every.log(step):
        _check_finite(pending)
        writer.write_scalars(step, _train_scalars(s, window))
        window = []
      if every.eval(step):
        _check_finite(pending)
        summary = _run_eval(s, eval_fn, state, step, writer, ckpt)
      if every.checkpoint(step):
        _check_finite(pending)
        ckpt.save_latest(step, state, train_iter.get_state())
    writer.flush()
  return summary


def _flat_hparams(config) -> dict[str, Any]:
  flat = {}

  def walk(prefix, d):
    for k, v in d.items():
      if isinstance(v, dict):
        walk(f'{prefix}{k}.', v)
      else:
        flat[f'{prefix}{k}'] = v if isinstance(v, (int, float, str, bool)) \
            else str(v)

  walk('', config.to_dict())
  return flat


def restore_state(s: Setup, workdir: epath.Path,
                  which: str = 'best') -> steps.State:
  """A trained state: 'best', 'latest', a step number, or 'imported'.

  'best' falls back to the latest checkpoint, and both to the imported
  official weights when the workdir has no checkpoint of its own.

  Raises:
    FileNotFoundError: nothing to restore in ``workdir``.
    ValueError: ``which`` is none of these.
  """
  if which not in ('best', 'latest', 'imported') and not which.isdigit():
    raise ValueError(f"checkpoint {which!r}: give 'best', 'latest', "
                     "'imported' or a step number")
  rng = jax.random.key(0)
  variables_shape = jax.eval_shape(
      functools.partial(s.model.init, train=False), rng,
      jnp.zeros(_dummy_shape(s.config)))
  if which == 'imported':
    v = checkpointing.load_variables(workdir / IMPORTED_DIR)
    return create_state(s, v)
  rep = parallel.replicated(s.mesh)
  template = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep),
      jax.eval_shape(lambda: create_state(s, variables_shape)))
  with checkpointing.Checkpointer(workdir) as ckpt:
    if which == 'best':
      restored = ckpt.restore_best(template) or ckpt.restore_latest(template)
    elif which == 'latest':
      restored = ckpt.restore_latest(template)
    else:  # A step of the rolling checkpoints, or the best one.
      step = int(which)
      restored = ckpt.restore(step, template, best=step == ckpt.best_step)
  if restored is None:
    if (workdir / IMPORTED_DIR).exists():
      return restore_state(s, workdir, 'imported')
    raise FileNotFoundError(
        f'{workdir}: no checkpoint to evaluate (train first, or run '
        '--mode=import_torch)')
  logging.info('Restored the checkpoint of step %d', restored.step)
  return restored.state


def evaluate(config: ml_collections.ConfigDict, workdir: str,
             checkpoint: str = 'best') -> dict[str, float]:
  """Evaluates a checkpoint of ``workdir`` on the whole eval split."""
  workdir = epath.Path(workdir)
  s = setup(config, workdir)
  state = restore_state(s, workdir, checkpoint)
  summary = eval_summary(s, evaluate_split(s, jit_eval_step(s), state))
  step = int(jax.device_get(state['step']))
  writer = metric_writers.create_default_writer(
      workdir / 'eval', just_logging=jax.process_index() > 0)
  writer.write_scalars(step, summary)
  writer.flush()
  for name in s.output_names:
    logging.info('%-9s pixel acc %.2f  mean acc %.2f  mIoU %.2f', name,
                 summary[f'eval/{name}/pixel_acc'],
                 summary[f'eval/{name}/mean_acc'],
                 summary[f'eval/{name}/miou'])
  return summary


def import_torch(config: ml_collections.ConfigDict, workdir: str,
                 torch_checkpoint: str, *, allow_pickle: bool = False) -> str:
  """Converts an official ``model-best.pth.tar`` into ``workdir``.

  The variables land in ``workdir/checkpoints/imported``, which ``eval``
  evaluates when there is no trained checkpoint and ``train`` starts from.

  Returns:
    The directory written.
  """
  workdir = epath.Path(workdir)
  model = models.build(config.model)
  template = jax.eval_shape(functools.partial(model.init, train=False),
                            jax.random.key(0),
                            jnp.zeros(_dummy_shape(config)))
  state_dict = convert.load_torch_checkpoint(torch_checkpoint,
                                             allow_pickle=allow_pickle)
  variables = convert.from_torch_state_dict(
      state_dict, len(config.data.modalities), template=template)
  out = workdir / IMPORTED_DIR
  checkpointing.save_variables(out, variables)
  logging.info('Imported %s into %s', torch_checkpoint, out)
  return str(out)
