"""The training loop and the evaluation driver, for any task.

``train_and_evaluate`` trains a task, evaluates it on its whole eval split at
the cadence's eval steps, keeps the rolling ``latest`` checkpoints for
resume and the ``best`` one by the task's declared metric and direction,
and resumes on its own from the workdir. ``evaluate`` restores the weights
of a checkpoint (nothing of training: no training split, no optimiser) and
writes the task's report. Everything here is task-agnostic: what differs
between tasks comes through the narrow interface of
``cen_jax.training.task``. Shardings are attached here and nowhere else:
the state and variables are replicated, batches split over ``'data'``.

Nothing is lost: SIGTERM or SIGINT saves the current step's checkpoint at
the next step boundary and returns (``training.preemption``); a latest
checkpoint that cannot be read is reported, moved aside and the newest
intact one resumed (``Checkpointer.restore_latest_intact``).
"""

import dataclasses
import functools
import pathlib
from typing import Any, Iterator
import weakref

from absl import logging
from clu import metric_writers
from clu import metrics as clu_metrics
from clu import parameter_overview
from clu import periodic_actions
from etils import epath
import jax
import jax.numpy as jnp
import numpy as np

from cen_jax.training import cadence
from cen_jax.training import checkpointing
from cen_jax.training import parallel
from cen_jax.training import preemption
from cen_jax.training import state as state_lib
from cen_jax.training.task import State, Summary, Task, Trainer, Variables

IMPORTED_DIR = 'checkpoints/imported'
EVAL_DIR = 'eval'
CHECKPOINT_CHOICES = ('best', 'latest', 'imported')
# The key of per-example eval outputs (see ``evaluate_split``).
ROWS = 'rows'
# Flush the on-device eval sums (int32 confusion counts) to int64/float64 on
# the host this often, long before 2^31 pixels can land in one cell.
_FLUSH_BATCHES = 64


@dataclasses.dataclass(frozen=True)
class Settings:
  """What the loop itself is configured with (``config.seed``,
  ``config.train``).

  Attributes:
    seed: drives the initialisation, dropout and the data order.
    log_every_steps: training-scalar period.
    eval_every_epochs: evaluation period in epochs.
    checkpoint_every_steps: rolling-checkpoint period.
    keep_checkpoints: rolling checkpoints kept.
  """
  seed: int
  log_every_steps: int
  eval_every_epochs: float
  checkpoint_every_steps: int
  keep_checkpoints: int = 2


def checkpointer(task: Task, workdir: epath.PathLike,
                 keep_latest: int = 2, *,
                 read_only: bool = False) -> checkpointing.Checkpointer:
  """The workdir's checkpoints, ranked by the task's best metric."""
  return checkpointing.Checkpointer(
      workdir, keep_latest=keep_latest, metric_name=task.best.stored_as,
      mode=task.best.mode, read_only=read_only)


# The shapes of each task object's variables. A run asks for them several
# times (restore template, parameter overview, eval); tracing the model's
# init for each took 2 s per trace for a ResNet-101 CEN and 1 s for the
# tests' tiny one. Weak keys: a task's entry goes when the task does.
_VARIABLE_SHAPES: 'weakref.WeakKeyDictionary[Any, Variables]' = (
    weakref.WeakKeyDictionary())


def abstract_variables(task: Task, sharding: Any = None) -> Variables:
  """Shapes of the task's variables, with ``sharding`` attached.

  ``task.init_variables`` is traced once per task object (tasks are built
  from a config and do not change their model afterwards).
  """
  try:
    shapes = _VARIABLE_SHAPES[task]
  except KeyError:
    shapes = jax.eval_shape(task.init_variables, jax.random.key(0))
    _VARIABLE_SHAPES[task] = shapes
  return state_lib.with_sharding(shapes, sharding)


def abstract_state(task: Task, trainer: Trainer, sharding: Any = None
                   ) -> State:
  """Shapes of the training state, with ``sharding`` attached."""
  return state_lib.abstract(trainer.create_state, abstract_variables(task),
                            sharding=sharding)


def start_variables(task: Task, workdir: epath.Path, rng: jax.Array,
                    sharding: Any) -> Variables:
  """Imported official weights if the workdir has them, else the task's."""
  imported = workdir / IMPORTED_DIR
  if imported.exists():
    logging.info('Starting from imported weights in %s', imported)
    return checkpointing.load_variables(
        imported, abstract_variables(task, sharding))
  return task.start_variables(rng)


def create_state(trainer: Trainer, mesh: jax.sharding.Mesh,
                 variables: Variables) -> State:
  """The step-0 state around ``variables``, replicated over ``mesh``."""
  return jax.jit(trainer.create_state,
                 out_shardings=parallel.replicated(mesh))(variables)


def _step_with_metrics(state, batch, rng, *, train_step):
  state, metrics = train_step(state, batch, rng)
  collection = clu_metrics.Collection.create(
      **{k: clu_metrics.Average.from_output(k) for k in metrics})
  return state, collection.single_from_model_output(**metrics)


def jit_train_step(trainer: Trainer, mesh: jax.sharding.Mesh):
  """The sharded, donating, jitted train step.

  Returns:
    ``fn(state, batch, rng) -> (state, metrics)`` where ``metrics`` is a
    ``clu.metrics.Collection`` of one ``Average`` per scalar the task
    reports; ``merge`` windows of them and ``compute()`` the means.
  """
  rep = parallel.replicated(mesh)
  return jax.jit(
      functools.partial(_step_with_metrics, train_step=trainer.train_step),
      in_shardings=(rep, parallel.batch_sharded(mesh), rep),
      out_shardings=(rep, rep), donate_argnums=0,
      compiler_options=getattr(trainer, 'compiler_options', None))


def jit_eval_step(task: Task, mesh: jax.sharding.Mesh):
  """``fn(variables, batch) -> sums``, jitted over ``mesh``.

  A task with ``eval_constants`` (arrays its eval step needs besides the
  variables, e.g. a metric network's weights) gets them as a third,
  replicated argument rather than as constants compiled into the program.
  """
  rep = parallel.replicated(mesh)
  constants = getattr(task, 'eval_constants', None)
  options = getattr(task, 'compiler_options', None)
  if constants is None:
    return jax.jit(task.eval_step,
                   in_shardings=(rep, parallel.batch_sharded(mesh)),
                   out_shardings=rep, compiler_options=options)
  fn = jax.jit(task.eval_step,
               in_shardings=(rep, parallel.batch_sharded(mesh), rep),
               out_shardings=rep, compiler_options=options)
  constants = jax.device_put(constants, rep)
  return lambda variables, batch: fn(variables, batch, constants)


def eval_batch_size(task: Task, mesh: jax.sharding.Mesh) -> int:
  """The task's eval batch, rounded up to fill every device."""
  return -(-task.eval_batch_size // mesh.size) * mesh.size


def _to_host(tree: Any) -> Any:
  """Device sums as int64 / float64 NumPy arrays."""

  def widen(x):
    x = np.asarray(x)
    return x.astype(np.int64 if np.issubdtype(x.dtype, np.integer)
                    else np.float64)

  return jax.tree.map(widen, tree)


def evaluate_split(task: Task, eval_fn, variables: Variables,
                   mesh: jax.sharding.Mesh) -> Any:
  """The task's eval results over its whole eval split, on the host.

  Sums are added up (int64/float64). A task whose eval step returns
  ``{'sums': ..., 'rows': ..., 'valid': (B,)}`` also gets the rows of its
  valid examples, concatenated in split order (per-example features for
  FID/KID); it then receives ``{'sums': totals, 'rows': rows}``.

  Raises:
    ValueError: the eval split yielded no batch.
  """
  batch = parallel.local_batch_size(eval_batch_size(task, mesh))
  loader = task.eval_loader(batch_size=batch,
                            shard_index=jax.process_index(),
                            shard_count=jax.process_count())
  total, pending, rows = None, None, []
  for i, local in enumerate(loader):
    out = eval_fn(variables, parallel.global_batch(local, mesh))
    sums = out
    if isinstance(out, dict) and ROWS in out:
      sums = out['sums']
      valid = np.asarray(out['valid'], bool)
      rows.append(jax.tree.map(lambda r: np.asarray(r)[valid], out[ROWS]))
    pending = sums if pending is None else jax.tree.map(jnp.add, pending,
                                                        sums)
    if (i + 1) % _FLUSH_BATCHES == 0:
      total = _accumulate(total, pending)
      pending = None
  if pending is not None:
    total = _accumulate(total, pending)
  if total is None:
    raise ValueError(f'the {task.name} eval split has no examples')
  if rows:
    return {'sums': total,
            ROWS: jax.tree.map(lambda *r: np.concatenate(r), *rows)}
  return total


def _accumulate(total: Any, pending: Any) -> Any:
  pending = _to_host(pending)
  return pending if total is None else jax.tree.map(np.add, total, pending)


def _check_finite(pending: list[tuple[int, jax.Array]]) -> None:
  """Raises on the first non-finite loss; ``pending`` holds (step, loss)."""
  for step, loss in pending:
    if not np.isfinite(float(loss)):
      raise FloatingPointError(
          f'Non-finite training loss {float(loss)} at step {step}; training '
          'stopped. The last good checkpoint is kept in the workdir.')
  pending.clear()


def _train_scalars(window: list[Any]) -> dict[str, float]:
  """Means over the logging window, ``train/<name>`` each."""
  merged = functools.reduce(lambda a, b: a.merge(b), window)
  return {f'train/{k}': float(v) for k, v in merged.compute().items()}


def _resume(task: Task, trainer: Trainer, ckpt: checkpointing.Checkpointer,
            workdir: epath.Path, rng: jax.Array, mesh: jax.sharding.Mesh,
            seed: int) -> tuple[State, Iterator, int]:
  """The latest checkpoint with its data position, or a fresh start."""
  loader = trainer.loader(
      batch_size=parallel.local_batch_size(task.batch_size), seed=seed,
      shard_index=jax.process_index(), shard_count=jax.process_count())
  train_iter = iter(loader)
  rep = parallel.replicated(mesh)
  restored = ckpt.restore_latest_intact(abstract_state(task, trainer, rep),
                                       iterator=train_iter)
  if restored is None:
    variables = start_variables(task, workdir, rng, rep)
    return create_state(trainer, mesh, variables), train_iter, 0
  logging.info('Resuming from step %d', restored.step)
  return restored.state, train_iter, restored.step


def _run_eval(task: Task, eval_fn, state: State, step: int, mesh, writer,
              ckpt: checkpointing.Checkpointer,
              variables_shape: Variables) -> Summary:
  variables = state_lib.subtree(state, variables_shape)
  summary = task.summarize(evaluate_split(task, eval_fn, variables, mesh))
  writer.write_scalars(step, summary)
  images = task.eval_images(variables)
  if images:
    writer.write_images(step, images)
  logging.info('step %d: %s', step, task.format_summary(summary))
  if ckpt.save_best(step, state, summary[task.best.key]):
    logging.info('New best %s %.4f at step %d', task.best.key,
                 summary[task.best.key], step)
  return summary


def _train_steps(task: Task, trainer: Trainer, state: State,
                 train_iter: Iterator, step: int, *, mesh, every, writer,
                 ckpt: checkpointing.Checkpointer, rng: jax.Array) -> Summary:
  """Steps from ``step`` to the end, or to a SIGTERM/SIGINT's checkpoint."""
  train_fn, eval_fn = jit_train_step(trainer, mesh), jit_eval_step(task, mesh)
  # Traced once, not at every evaluation (a ResNet-101 trace takes seconds).
  variables_shape = abstract_variables(task)
  progress = periodic_actions.ReportProgress(
      num_train_steps=trainer.total_steps, writer=writer,
      every_steps=every.log_every)
  window, pending, summary = [], [], {}
  with preemption.Preemption() as stop:
    while step < trainer.total_steps:
      batch = parallel.global_batch(next(train_iter), mesh)
      state, step_metrics = train_fn(state, batch, rng)
      step += 1
      window.append(step_metrics)
      pending.append((step, step_metrics.loss.total))
      progress(step)
      if every.log(step):
        _check_finite(pending)
        writer.write_scalars(step, _train_scalars(window))
        window = []
      if every.eval(step):
        _check_finite(pending)
        summary = _run_eval(task, eval_fn, state, step, mesh, writer, ckpt,
                            variables_shape)
      if every.checkpoint(step):
        _check_finite(pending)
        ckpt.save_latest(step, state, train_iter)
      if stop.reached(step):
        _check_finite(pending)
        ckpt.save_latest(step, state, train_iter)
        ckpt.wait_until_finished()
        logging.warning(
            'Stopped by %s after step %d of %d; its checkpoint is in %s. '
            'Run the same command again to resume.', stop.signal_name, step,
            trainer.total_steps, ckpt.latest_directory / str(step))
        break
  return summary


def train_and_evaluate(task: Task, workdir: epath.PathLike,
                       settings: Settings, *,
                       hparams: dict[str, Any] | None = None,
                       mesh: jax.sharding.Mesh | None = None) -> Summary:
  """Trains and evaluates ``task``; resumes from ``workdir`` if it holds a run.

  Args:
    task: the task (``cen_jax.tasks.build``).
    workdir: the run directory.
    settings: seed and cadence.
    hparams: flat hyperparameters written to TensorBoard at step 0.
    mesh: default: every device on one ``'data'`` axis.

  Returns:
    The last evaluation's scalars (empty if no evaluation ran).
  """
  workdir = epath.Path(workdir)
  mesh = mesh or parallel.make_mesh()
  parallel.check_divisible(task.batch_size, mesh, 'the training batch size')
  trainer = task.trainer()
  init_rng, dropout_rng = jax.random.split(jax.random.key(settings.seed))
  writer = metric_writers.create_default_writer(
      workdir, just_logging=jax.process_index() > 0)
  every = cadence.Cadence(
      trainer.total_steps, settings.log_every_steps,
      cadence.epochs_to_steps(settings.eval_every_epochs,
                              trainer.steps_per_epoch),
      settings.checkpoint_every_steps)
  with checkpointer(task, workdir, settings.keep_checkpoints) as ckpt:
    state, train_iter, step = _resume(task, trainer, ckpt, workdir,
                                      init_rng, mesh, settings.seed)
    if step == 0:
      parameter_overview.log_parameter_overview(
          state_lib.subtree(state, abstract_variables(task)))
      writer.write_hparams(hparams or {})
    summary = _train_steps(task, trainer, state, train_iter, step,
                           mesh=mesh, every=every, writer=writer, ckpt=ckpt,
                           rng=dropout_rng)
    writer.flush()
  return summary


def check_checkpoint_name(which: str) -> None:
  """Raises ValueError unless ``which`` names a checkpoint."""
  if which not in CHECKPOINT_CHOICES and not which.isdigit():
    raise ValueError(f"checkpoint {which!r}: give 'best', 'latest', "
                     "'imported' or a step number")


def restore_variables(task: Task, workdir: epath.PathLike,
                      which: str = 'best', *,
                      sharding: Any = None) -> tuple[Variables, int]:
  """A checkpoint's variables alone: no optimiser state is read.

  'best' falls back to the latest checkpoint, and both to the imported
  official weights when the workdir has no checkpoint of its own.

  Args:
    task: the task whose variables to restore.
    workdir: the run directory.
    which: 'best', 'latest', 'imported' or a step number.
    sharding: of every restored leaf (default: the first local device).

  Returns:
    ``(variables, step)``; the step is 0 for imported weights.

  Raises:
    FileNotFoundError: nothing to restore in ``workdir``.
    ValueError: ``which`` is none of these.
  """
  check_checkpoint_name(which)
  workdir = epath.Path(workdir)
  if sharding is None:
    sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  variables = abstract_variables(task, sharding)
  if which == 'imported':
    return checkpointing.load_variables(workdir / IMPORTED_DIR,
                                        variables), 0
  template = {'step': jax.ShapeDtypeStruct((), jnp.int32, sharding=sharding),
              **variables}
  try:
    restored = _restore_partial(task, workdir, which, template)
  except ValueError as e:
    raise ValueError(
        f'{workdir}: its {which} checkpoint does not fit the model this '
        f'config builds ({e})') from e
  if restored is None:
    if (workdir / IMPORTED_DIR).exists():
      return restore_variables(task, workdir, 'imported', sharding=sharding)
    raise FileNotFoundError(
        f'{workdir}: no checkpoint to evaluate (train first, or run '
        '--mode=import_torch)')
  logging.info('Restored the checkpoint of step %d', restored.step)
  return ({k: restored.state[k] for k in variables}, int(restored.step))


def _restore_partial(task: Task, workdir: epath.Path, which: str,
                     template: Any) -> checkpointing.Restored | None:
  # Read-only: evaluating a workdir while it trains must not delete the
  # training's save in flight (Orbax cleans temporary directories on open).
  with checkpointer(task, workdir, read_only=True) as ckpt:
    if which == 'best':
      return (ckpt.restore_best(template, partial=True)
              or ckpt.restore_latest(template, partial=True))
    if which == 'latest':
      return ckpt.restore_latest(template, partial=True)
    step = int(which)  # A step of the rolling checkpoints, or the best one.
    return ckpt.restore(step, template, best=step == ckpt.best_step,
                        partial=True)


def evaluate(task: Task, workdir: epath.PathLike, checkpoint: str = 'best',
             *, mesh: jax.sharding.Mesh | None = None) -> Summary:
  """Evaluates a checkpoint of ``workdir`` on the task's whole eval split.

  Writes the scalars to TensorBoard under ``<workdir>/eval`` and the task's
  report (scores, tables, ...) to ``<workdir>/eval/<step>/``, and logs the
  report's summary.

  Returns:
    The evaluation's scalars.
  """
  workdir = epath.Path(workdir)
  mesh = mesh or parallel.make_mesh()
  variables, step = restore_variables(task, workdir, checkpoint,
                                      sharding=parallel.replicated(mesh))
  totals = evaluate_split(task, jit_eval_step(task, mesh), variables, mesh)
  summary = task.summarize(totals)
  writer = metric_writers.create_default_writer(
      workdir / EVAL_DIR, just_logging=jax.process_index() > 0)
  writer.write_scalars(step, summary)
  writer.flush()
  if jax.process_index() == 0:
    directory = pathlib.Path(workdir / EVAL_DIR / str(step))
    text = task.write_report(directory, totals, summary)
    logging.info('Evaluation of step %d (%s), written to %s:\n%s', step,
                 checkpoint, directory, text)
  return summary


def import_variables(workdir: epath.PathLike, variables: Variables
                     ) -> epath.Path:
  """Saves converted official weights where ``train`` and ``eval`` find them.

  Returns:
    The directory written, ``<workdir>/checkpoints/imported``.
  """
  out = epath.Path(workdir) / IMPORTED_DIR
  checkpointing.save_variables(out, variables)
  return out
