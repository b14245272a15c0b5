"""What each mode of ``main.py`` does, for any task, from a config.

This module joins the two halves of the library: it builds the task that
``config.task`` names (``cen_jax.tasks``) and hands it to the task-agnostic
loop (``cen_jax.training.loop``) or to the task's own modes. The loop reads
``config.seed`` and ``config.train`` through :func:`loop_settings`; the task
reads the rest.
"""

import json
from typing import Any

from absl import logging
from etils import epath
import jax
import ml_collections

from cen_jax import tasks
from cen_jax.training import checkpointing
from cen_jax.training import loop


def loop_settings(config: ml_collections.ConfigDict) -> loop.Settings:
  """The loop's own settings: the seed and ``config.train``'s cadence."""
  t = config.train
  return loop.Settings(
      seed=int(config.seed), log_every_steps=t.log_every_steps,
      eval_every_epochs=t.eval_every_epochs,
      checkpoint_every_steps=t.checkpoint_every_steps,
      keep_checkpoints=t.keep_checkpoints)


def flat_hparams(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The config as ``{'optim.batch_size': 6, ...}`` for TensorBoard."""
  return {k: v if isinstance(v, (int, float, str, bool)) else str(v)
          for k, v in _flat(config.to_dict()).items()}


# Config fields that define the model a checkpoint holds: using its
# weights with other values is refused (eval, predict, analyze, export).
MODEL_FIELDS = ('task', 'model.', 'data.modalities', 'data.inputs',
                'data.target', 'data.targets')
# ... and, for resuming training, those that define the data position too.
TRAINING_FIELDS = MODEL_FIELDS + ('data.name', 'data.crop_size',
                                  'data.scale_range', 'data.shorter_side',
                                  'data.load_size', 'optim.batch_size')
# Model fields that change how the same weights are trained or computed
# with, not what they mean.
COMPATIBLE_MODEL_FIELDS = ('model.dtype', 'model.dropout_rate',
                           'model.bn_momentum', 'model.norm_momentum')


def _jsonable(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The config as ``config.json`` holds it (tuples become lists)."""
  return json.loads(json.dumps(config.to_dict(), default=str))


def _flat(tree: dict[str, Any], prefix: str = '') -> dict[str, Any]:
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(_flat(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = v
  return out


def _has_checkpoints(workdir: epath.Path) -> bool:
  latest = workdir / 'checkpoints' / 'latest'
  return latest.exists() and any(p.name.isdigit() for p in latest.iterdir())


def check_same_run(config: ml_collections.ConfigDict, workdir: epath.Path,
                   fields: tuple[str, ...] = TRAINING_FIELDS) -> None:
  """Refuses a config that changes what a workdir's checkpoints mean.

  Compares ``config`` with the workdir's ``config.json`` when the workdir
  holds checkpoints. ``fields`` (dotted names; a trailing dot covers a
  whole section) must be equal; other changes (learning rates, cadence,
  eval settings, ...) are allowed and logged; fields the saved config lacks
  (added by a later version) are ignored.

  Raises:
    ValueError: some of ``fields`` differ; the message lists each with its
      saved and new value.
  """
  saved = workdir / 'config.json'
  if not (saved.exists() and _has_checkpoints(workdir)):
    return
  old, new = _flat(json.loads(saved.read_text())), _flat(_jsonable(config))
  changed = sorted(k for k in old.keys() & new.keys() if old[k] != new[k])
  bad = [k for k in changed
         if any(k == f or (f.endswith('.') and k.startswith(f))
                for f in fields)
         and k not in COMPATIBLE_MODEL_FIELDS]
  if bad:
    raise ValueError(
        f'{workdir} holds a run made with another model or data: '
        + '; '.join(f'{k}: {old[k]!r} -> {new[k]!r}' for k in bad)
        + f'. Use a new --workdir, or the values of {saved}.')
  for k in changed:
    logging.info('%s: %s differs from the run (%r -> %r)', workdir, k,
                 old[k], new[k])


def prepare_workdir(workdir: epath.Path) -> None:
  """Creates ``workdir`` and proves it writable, before any compute."""
  # One probe per process: the hosts of a pod share the workdir.
  probe = workdir / f'.write_probe_{jax.process_index()}'
  try:
    workdir.mkdir(parents=True, exist_ok=True)
    probe.write_text('ok')
    probe.unlink()
  except OSError as e:
    raise PermissionError(
        f'workdir {workdir} cannot be written ({type(e).__name__}: {e}); '
        'nothing was computed') from e


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> dict[str, float]:
  """Trains and evaluates; resumes from ``workdir`` if it holds a run.

  Returns:
    The last evaluation's scalars (empty if no evaluation ran).
  """
  workdir = epath.Path(workdir)
  prepare_workdir(workdir)
  check_same_run(config, workdir)
  checkpointing.write_config_json(workdir, config.to_dict())
  task = tasks.build(config, workdir)
  return loop.train_and_evaluate(task, workdir, loop_settings(config),
                                 hparams=flat_hparams(config))


def evaluate(config: ml_collections.ConfigDict, workdir: str,
             checkpoint: str = 'best') -> dict[str, float]:
  """Evaluates a checkpoint of ``workdir``; needs only the eval split."""
  loop.check_checkpoint_name(checkpoint)
  check_same_run(config, epath.Path(workdir), MODEL_FIELDS)
  return loop.evaluate(tasks.build(config, workdir), workdir, checkpoint)


def import_torch(config: ml_collections.ConfigDict, workdir: str,
                 torch_checkpoint: str, *, allow_pickle: bool = False) -> str:
  """Converts an official PyTorch checkpoint into ``workdir``."""
  entry = tasks.entry(config)
  return entry.modes.import_torch(entry.build(config, workdir), workdir,
                                  torch_checkpoint, allow_pickle=allow_pickle)


def predict(config: ml_collections.ConfigDict, workdir: str, source: str,
            output_dir: str, **options: Any) -> Any:
  """The task's predictions for the inputs in ``source``."""
  loop.check_checkpoint_name(options.get('checkpoint', 'best'))
  check_same_run(config, epath.Path(workdir), MODEL_FIELDS)
  entry = tasks.entry(config)
  return entry.modes.predict(entry.build(config, workdir), workdir, source,
                             output_dir, **options)


def analyze(config: ml_collections.ConfigDict, workdir: str,
            output_dir: str | None = None, **options: Any) -> Any:
  """The task's analysis of what a checkpoint exchanges."""
  loop.check_checkpoint_name(options.get('checkpoint', 'best'))
  check_same_run(config, epath.Path(workdir), MODEL_FIELDS)
  entry = tasks.entry(config)
  return entry.modes.analyze(entry.build(config, workdir), workdir,
                             output_dir, **options)


def export_model(config: ml_collections.ConfigDict, workdir: str,
                 output_dir: str, **options: Any) -> Any:
  """The task's deployable artifacts of a checkpoint."""
  loop.check_checkpoint_name(options.get('checkpoint', 'best'))
  check_same_run(config, epath.Path(workdir), MODEL_FIELDS)
  entry = tasks.entry(config)
  return entry.modes.export_model(entry.build(config, workdir), workdir,
                                  output_dir, **options)
