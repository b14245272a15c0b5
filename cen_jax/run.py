"""What each mode of ``main.py`` does, for any task, from a config.

This module joins the two halves of the library: it builds the task that
``config.task`` names (``cen_jax.tasks``) and hands it to the task-agnostic
loop (``cen_jax.training.loop``) or to the task's own modes. The loop reads
``config.seed`` and ``config.train`` through :func:`loop_settings`; the task
reads the rest.
"""

from typing import Any

from etils import epath
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


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> dict[str, float]:
  """Trains and evaluates; resumes from ``workdir`` if it holds a run.

  Returns:
    The last evaluation's scalars (empty if no evaluation ran).
  """
  workdir = epath.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  checkpointing.write_config_json(workdir, config.to_dict())
  task = tasks.build(config, workdir)
  return loop.train_and_evaluate(task, workdir, loop_settings(config),
                                 hparams=flat_hparams(config))


def evaluate(config: ml_collections.ConfigDict, workdir: str,
             checkpoint: str = 'best') -> dict[str, float]:
  """Evaluates a checkpoint of ``workdir``; needs only the eval split."""
  loop.check_checkpoint_name(checkpoint)
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
  entry = tasks.entry(config)
  return entry.modes.predict(entry.build(config, workdir), workdir, source,
                             output_dir, **options)


def analyze(config: ml_collections.ConfigDict, workdir: str,
            output_dir: str | None = None, **options: Any) -> Any:
  """The task's analysis of what a checkpoint exchanges."""
  loop.check_checkpoint_name(options.get('checkpoint', 'best'))
  entry = tasks.entry(config)
  return entry.modes.analyze(entry.build(config, workdir), workdir,
                             output_dir, **options)


def export_model(config: ml_collections.ConfigDict, workdir: str,
                 output_dir: str, **options: Any) -> Any:
  """The task's deployable artifacts of a checkpoint."""
  loop.check_checkpoint_name(options.get('checkpoint', 'best'))
  entry = tasks.entry(config)
  return entry.modes.export_model(entry.build(config, workdir), workdir,
                                  output_dir, **options)
