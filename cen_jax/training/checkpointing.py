"""Orbax checkpoints of the train state and the data iterator, plus config.json.

Layout under the workdir::

  workdir/config.json
  workdir/checkpoints/latest/<step>/{state,iterator}   rolling, for resume
  workdir/checkpoints/best/<step>/{state,metrics}      the best eval metric
  workdir/checkpoints/broken/                          unreadable ones

Each step directory holds ``state``, a plain dict pytree (``params``,
``batch_stats``, ``opt_state``, ``step``, ...) saved with
``StandardSave``, and ``iterator``, the grain data iterator's position,
saved by grain's own Orbax handler (``grain.checkpoint``): every process
writes its own ``process_<i>-of-<n>.json``, so each host of a pod resumes
its own shard of the data. A plain iterator state (a JSON-able dict or
bytes) can be saved instead, as ``data`` with ``JsonSave``; checkpoints
written before the per-process handler hold that, and still resume on one
process. Orbax writes each step to a ``<step>.orbax-checkpoint-tmp*``
directory and renames it once complete, so a process killed mid-save leaves
the previous step intact; the leftover temporary directory is deleted when
the next :class:`Checkpointer` opens.
"""

import base64
import copy
import functools
import json
import math
import time
from collections.abc import Mapping
from typing import Any, NamedTuple

from absl import logging
import grain
import jax
import orbax.checkpoint as ocp
from etils import epath
from orbax.checkpoint._src.serialization import type_handler_registry

_LATEST = 'latest'
_BEST = 'best'
_BROKEN = 'broken'


@functools.cache
def _whole_arrays_on_cpu() -> None:
  """On the CPU backend, orbax saves a replicated array whole, from replica 0.

  By default orbax splits the save of a replicated array among its replicas
  ("replica-parallel"): every device copies out its own slice through a
  jitted slice program, one per array shape, compiled on first use. On an
  accelerator that spreads the device-to-host copies over the devices. On
  the CPU backend the devices share the host's memory: there is no copy to
  spread, only the programs to compile. The tiny model's first save on 4
  CPU devices took 4.8 s with them and 0.3 s without. Orbax itself already
  turns it off on GPU. The on-disk format is the same either way.

  This replaces orbax's default ``jax.Array`` handler in its global
  registry by a copy with replica-parallel saving off, once, on the CPU
  backend only; a handler a user registered is left alone. The first
  :class:`Checkpointer` calls it, not the import: asking for the backend
  at import time would start JAX before a user's ``jax.distributed`` or
  device-count setup.
  """
  if jax.default_backend() != 'cpu':
    return
  handler = ocp.type_handlers.get_type_handler(jax.Array)
  # pylint: disable=protected-access
  if (type(handler) is not ocp.type_handlers.ArrayHandler
      or not handler._use_replica_parallel):
    return
  whole = copy.copy(handler)
  whole._use_replica_parallel = False
  # pylint: enable=protected-access
  type_handler_registry.GLOBAL_TYPE_HANDLER_REGISTRY.add(
      jax.Array, whole, override=True, ignore_warnings=True)


class BrokenCheckpointError(RuntimeError):
  """No checkpoint of a run can be read; the message names every path."""


class Restored(NamedTuple):
  """A restored checkpoint; unpacks as ``state, data_state, step``.

  Attributes:
    state: the state pytree, with the template's structure, dtypes and
      shardings.
    data_state: the data iterator's state as it was given to the save
      (a JSON-able dict or bytes), or ``None`` if none was saved.
    step: the checkpoint's step.
  """
  state: Any
  data_state: Any
  step: int


def _encode_data_state(data_state: Any) -> dict[str, Any]:
  """Wraps an iterator state for ``JsonSave``; bytes go through base64."""
  if data_state is None:
    return {'kind': 'none'}
  if isinstance(data_state, bytes):
    return {'kind': 'bytes', 'value': base64.b64encode(data_state).decode()}
  return {'kind': 'json', 'value': data_state}


def _decode_data_state(stored: Mapping[str, Any]) -> Any:
  """Inverse of :func:`_encode_data_state`."""
  if stored['kind'] == 'bytes':
    return base64.b64decode(stored['value'])
  return stored.get('value')


_ITERATOR = 'iterator'
_DATA = 'data'


def _is_iterator(data: Any) -> bool:
  return hasattr(data, 'get_state') and hasattr(data, 'set_state')


def _save_args(state: Any, data: Any) -> ocp.args.Composite:
  """``state``, and ``data``: a grain iterator or a plain iterator state."""
  if _is_iterator(data):
    return ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        **{_ITERATOR: grain.checkpoint.CheckpointSave(data)})
  return ocp.args.Composite(
      state=ocp.args.StandardSave(state),
      **{_DATA: ocp.args.JsonSave(_encode_data_state(data))})


class DataPositionError(ValueError):
  """A checkpoint's data position does not fit this run's data loading."""


def _set_legacy_state(path: epath.Path, iterator: Any,
                      data_state: Any) -> None:
  """A position saved as one JSON state (one process), as older runs did."""
  if jax.process_count() > 1:
    raise DataPositionError(
        f'{path} holds one process\'s data position (a checkpoint of a '
        f'single-process run); this run has {jax.process_count()} processes')
  try:
    iterator.set_state(data_state)
  except ValueError as e:
    raise DataPositionError(
        f'{path}: the data loading changed since this checkpoint (dataset, '
        f'sharding, batch size or seed), so its position does not apply '
        f'({e})') from e


def _process_files(directory: epath.Path) -> list[str]:
  return sorted(p.name for p in directory.iterdir()
                if p.name.startswith('process_'))


def _restore_iterator(directory: epath.Path, iterator: Any) -> None:
  """Sets ``iterator`` to the position this process saved in ``directory``.

  Raises:
    DataPositionError: the checkpoint was written by another number of
      processes, or with another sampler (dataset, sharding, batch, seed);
      resuming would repeat or skip data, so it is refused.
  """
  want = (f'process_{jax.process_index()}-of-{jax.process_count()}.json')
  files = _process_files(directory)
  if want not in files:
    raise DataPositionError(
        f'{directory} holds the data positions {files}, written by another '
        f'number of processes; this run has {jax.process_count()} and would '
        f'need {want}. Resume with the process count of the checkpoint.')
  try:
    grain.checkpoint.CheckpointHandler().restore(
        directory, args=grain.checkpoint.CheckpointRestore(iterator))
  except ValueError as e:
    raise DataPositionError(
        f'{directory / want}: the data loading changed since this '
        f'checkpoint (dataset, sharding, batch size or seed), so its '
        f'position does not apply ({e})') from e


def _absolute(path: epath.PathLike) -> epath.Path:
  """Orbax rejects relative paths: ``--workdir=runs/x`` is made absolute."""
  path = epath.Path(path)
  return path if path.is_absolute() else path.resolve()


def _is_mismatch(error: Exception) -> bool:
  """Whether a restore failed on the template, not on the files."""
  text = str(error)
  return isinstance(error, ValueError) and any(
      clue in text for clue in ('stored shape', 'tree structure',
                                'Topology mismatch', 'available devices'))


def _metric_value(metrics: Mapping[str, float], name: str,
                  directory: epath.Path | None = None) -> float:
  if name not in metrics:
    raise ValueError(
        f'{directory}: the best checkpoint there was ranked by '
        f'{sorted(metrics)}, but this run ranks checkpoints by {name!r} (the '
        "task's best metric; translation switches from 'l1' to 'fid' when "
        'eval.inception_weights is set). Keep the run\'s original setting, '
        'or train in a new workdir.')
  return metrics[name]


def _manager(directory: epath.Path, preservation_policy: Any,
             async_save: bool, best_fn: Any = None,
             best_mode: str = 'max',
             read_only: bool = False) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      preservation_policy=preservation_policy,
      best_fn=best_fn,  # also makes orbax persist the metrics it ranks by
      best_mode=best_mode,
      # Leftovers of a save killed before its rename are never restorable.
      # A reader must not touch them: they may be a running training's
      # save in flight.
      cleanup_tmp_directories=not read_only,
      read_only=read_only,
      enable_async_checkpointing=async_save,
      # 'latest' and 'best' may save the same step at once; with several
      # processes their cross-process barriers, keyed by step, must differ.
      multiprocessing_options=ocp.options.MultiprocessingOptions(
          barrier_sync_key_prefix=epath.Path(directory).name),
  )
  return ocp.CheckpointManager(directory, options=options)


class Checkpointer:
  """The rolling ``latest`` and the ``best`` checkpoints of one run.

  Saves are asynchronous by default: ``save_*`` returns once the arrays are
  on the host (on CPU, XLA then declines to donate a buffer orbax is still
  writing), so the caller may donate them to the next step right away, and
  the write finishes in a background thread. Call :meth:`close` (or use the
  object as a context manager) before the process exits.

  Args:
    workdir: the run's directory (local path or ``gs://``).
    keep_latest: how many ``latest`` checkpoints to keep.
    metric_name: name under which :meth:`save_best` records its metric.
    mode: ``'max'`` (higher is better, e.g. mIoU) or ``'min'`` (FID).
    async_save: write in a background thread.
    read_only: only restore (eval, predict, ...): nothing in the workdir is
      created, moved or deleted, so a run training there is undisturbed.
  """

  def __init__(self, workdir: epath.PathLike, *, keep_latest: int = 2,
               metric_name: str = 'miou', mode: str = 'max',
               async_save: bool = True, read_only: bool = False):
    if keep_latest < 1:
      raise ValueError(f'keep_latest must be >= 1: {keep_latest}.')
    if mode not in ('max', 'min'):
      raise ValueError(f"mode must be 'max' or 'min': {mode!r}.")
    _whole_arrays_on_cpu()
    root = _absolute(workdir) / 'checkpoints'
    self._metric_name = metric_name
    self._mode = mode
    self._latest = _manager(
        root / _LATEST, ocp.checkpoint_managers.LatestN(n=keep_latest),
        async_save, read_only=read_only)
    get_metric = functools.partial(_metric_value, name=metric_name,
                                   directory=root / _BEST)
    self._best = _manager(
        root / _BEST,
        ocp.checkpoint_managers.BestN(
            get_metric_fn=get_metric, n=1, reverse=mode == 'min',
            keep_checkpoints_without_metrics=False),
        async_save, best_fn=get_metric, best_mode=mode, read_only=read_only)
    self._best_fn = get_metric
    self._best_value = self._stored_best_value()

  def _stored_best_value(self) -> float | None:
    step = self._best.best_step()
    if step is None:
      return None
    return float(self._best_fn(self._best.metrics(step)))

  @property
  def latest_step(self) -> int | None:
    """Step of the newest ``latest`` checkpoint, or ``None``."""
    return self._latest.latest_step()

  @property
  def latest_directory(self) -> epath.Path:
    """Where the rolling checkpoints live (``<step>/`` each)."""
    return epath.Path(self._latest.directory)

  @property
  def best_step(self) -> int | None:
    """Step of the ``best`` checkpoint, or ``None``."""
    return self._best.best_step()

  @property
  def best_value(self) -> float | None:
    """The metric of the ``best`` checkpoint, or ``None`` before the first."""
    return self._best_value

  def save_latest(self, step: int, state: Any, data_state: Any = None) -> bool:
    """Saves ``state`` and the data position as the newest ``latest`` step.

    Args:
      step: the number of completed updates.
      state: plain dict pytree of arrays and scalars.
      data_state: the grain iterator itself (each process saves its own
        position), or a plain state (``get_state()``: a JSON-able dict or
        bytes, saved by the primary process).

    Returns:
      ``False`` (and saves nothing) if ``step`` is already saved.
    """
    if step in self._latest.all_steps():
      return False
    return self._latest.save(step, args=_save_args(state, data_state),
                             force=True)

  def save_best(self, step: int, state: Any, metric: float,
                data_state: Any = None) -> bool:
    """Saves ``state`` as ``best`` if ``metric`` beats every earlier one.

    Higher is better (lower with ``mode='min'``); ties and NaN do not count
    as improvements. The best
    value so far survives restarts (orbax stores it beside the checkpoint).

    Args:
      step: the number of completed updates.
      state: plain dict pytree of arrays and scalars.
      metric: the selection metric, e.g. the ensemble mIoU.
      data_state: optional iterator state to store alongside.

    Returns:
      Whether a checkpoint was written.
    """
    metric = float(metric)
    if math.isnan(metric):
      return False
    improved = (self._best_value is None
                or (metric < self._best_value if self._mode == 'min'
                    else metric > self._best_value))
    if not improved or step in self._best.all_steps():
      return False
    saved = self._best.save(step, args=_save_args(state, data_state),
                            metrics={self._metric_name: metric}, force=True)
    if saved:
      self._best_value = metric
    return saved

  def restore_latest(self, template: Any, *, partial: bool = False,
                     iterator: Any = None) -> Restored | None:
    """Restores the newest ``latest`` checkpoint, or ``None`` if none exists.

    Args:
      template: pytree like the saved state whose leaves (``jax.Array``,
        ``jax.ShapeDtypeStruct`` with a ``sharding``, NumPy arrays or
        Python scalars) give the shapes, dtypes and shardings to restore to.
      partial: ``template`` is a sub-tree of the saved state (e.g. the
        weights without the optimiser state): read only what it names.
      iterator: a grain iterator to set to the saved data position (this
        process's own).

    Returns:
      ``Restored(state, data_state, step)`` or ``None``; ``data_state`` is
      the plain state saved with JSON, if any (``None`` for a partial
      restore and for iterators saved per process).

    Raises:
      DataPositionError: the saved position does not fit ``iterator``.
    """
    return self._restore(self._latest, self.latest_step, template, partial,
                         iterator)

  def restore_latest_intact(self, template: Any,
                            iterator: Any = None) -> Restored | None:
    """The newest ``latest`` checkpoint that can be read, for resuming.

    A checkpoint that fails to restore (a truncated or corrupt file) is
    reported by path and moved aside to ``checkpoints/broken/`` (nothing is
    deleted), and the next older one is tried; the run then resumes from
    the newest intact one and overwrites nothing good.

    Returns:
      ``Restored`` or ``None`` when the run has no checkpoint at all.

    Raises:
      BrokenCheckpointError: checkpoints exist but none can be read; the
        message lists them (and where they were moved).
    """
    broken = []
    for step in sorted(self._latest.all_steps(), reverse=True):
      path = self.latest_directory / str(step)
      try:
        return self._restore(self._latest, step, template, partial=False,
                             iterator=iterator)
      except DataPositionError:
        raise
      except Exception as e:  # pylint: disable=broad-except
        if _is_mismatch(e):  # Intact, but of another model: keep it.
          raise ValueError(f'{path} does not fit the model being trained '
                           f'({e})') from e
        moved = self._move_aside(path)
        broken.append(f'{path} ({type(e).__name__}: {e}; moved to {moved})')
        logging.error('Checkpoint %s cannot be read (%s: %s); moved it to %s '
                      'and trying an older one.', path, type(e).__name__, e,
                      moved)
    if broken:
      raise BrokenCheckpointError(
          'no checkpoint of this run can be read, so it cannot resume: '
          + '; '.join(broken))
    return None

  def _move_aside(self, path: epath.Path) -> epath.Path:
    target = (path.parent.parent / _BROKEN
              / f'{path.parent.name}_{path.name}_{int(time.time())}')
    target.parent.mkdir(parents=True, exist_ok=True)
    path.rename(target)
    self._latest.reload()
    return target

  def restore_best(self, template: Any, *,
                   partial: bool = False) -> Restored | None:
    """Restores the ``best`` checkpoint (see :meth:`restore_latest`)."""
    return self._restore(self._best, self.best_step, template, partial)

  def restore(self, step: int, template: Any, *, best: bool = False,
              partial: bool = False) -> Restored:
    """Restores a given step of ``latest`` (or of ``best`` when ``best``).

    Raises:
      FileNotFoundError: if that step is not saved.
    """
    manager = self._best if best else self._latest
    if step not in manager.all_steps():
      raise FileNotFoundError(
          f'No step {step} in {manager.directory}: {manager.all_steps()}.')
    return self._restore(manager, step, template, partial)

  def _restore(self, manager: ocp.CheckpointManager, step: int | None,
               template: Any, partial: bool,
               iterator: Any = None) -> Restored | None:
    if step is None:
      return None
    # An async save of this very step may still be in flight.
    manager.wait_until_finished()
    if partial:
      restored = manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.PyTreeRestore(
              item=template,
              restore_args=ocp.checkpoint_utils.construct_restore_args(
                  template),
              partial_restore=True)))
      return Restored(restored.state, None, step)
    step_dir = epath.Path(manager.directory) / str(step)
    items = {'state': ocp.args.StandardRestore(template)}
    if (step_dir / _DATA).exists():
      items[_DATA] = ocp.args.JsonRestore()
    restored = manager.restore(step, args=ocp.args.Composite(**items))
    data_state = (_decode_data_state(restored[_DATA]) if _DATA in items
                  else None)
    if iterator is not None:
      if (step_dir / _ITERATOR).exists():
        _restore_iterator(step_dir / _ITERATOR, iterator)
      elif data_state is not None:
        _set_legacy_state(step_dir / _DATA, iterator, data_state)
    return Restored(restored.state, data_state, step)

  def wait_until_finished(self) -> None:
    """Blocks until every pending save is on disk."""
    self._latest.wait_until_finished()
    self._best.wait_until_finished()

  def close(self) -> None:
    """Finishes pending saves and releases orbax's threads."""
    self._latest.close()
    self._best.close()

  def __enter__(self) -> 'Checkpointer':
    return self

  def __exit__(self, *exc_info: Any) -> None:
    self.close()


def write_config_json(workdir: epath.PathLike,
                      config: Mapping[str, Any]) -> epath.Path:
  """Writes ``workdir/config.json`` (primary process only), atomically.

  Args:
    workdir: the run's directory; created if missing.
    config: a plain nested mapping, e.g. ``ConfigDict.to_dict()``. Values
      JSON cannot encode are written as their ``str``.

  Returns:
    The path of ``config.json``.
  """
  path = epath.Path(workdir) / 'config.json'
  if jax.process_index() != 0:
    return path
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.parent / 'config.json.tmp'
  tmp.write_text(json.dumps(config, indent=2, sort_keys=True, default=str))
  # A rename, so a reader (or a killed writer) never sees half a file.
  tmp.replace(path)
  return path


def save_variables(path: epath.PathLike, variables: Mapping[str, Any], *,
                   overwrite: bool = True) -> None:
  """Writes model variables alone (no optimiser state) as an Orbax checkpoint.

  Used for imported official weights and for inference exports: the
  directory holds ``{'params': ..., 'batch_stats': ...}`` and nothing else.

  Args:
    path: the checkpoint directory.
    variables: a pytree of arrays.
    overwrite: replace a checkpoint already at ``path``; if False, an
      existing one raises ``ValueError``.
  """
  path = epath.Path(path)
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(path.resolve(), dict(variables), force=overwrite)
    ckptr.wait_until_finished()


def load_variables(path: epath.PathLike, template: Any = None) -> Any:
  """Reads what ``save_variables`` wrote, as saved or into ``template``."""
  path = epath.Path(path)
  if not path.exists():
    raise FileNotFoundError(f'{path}: no variables checkpoint here')
  with ocp.StandardCheckpointer() as ckptr:
    if template is None:
      return ckptr.restore(path.resolve())
    return ckptr.restore(path.resolve(), template)
