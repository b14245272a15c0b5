"""The tasks CEN is trained on; ``config.task`` picks one.

Each task is a package here that owns its model(s), optimiser(s), state,
steps, data, metrics and user-facing modes, behind the interface of
``cen_jax.training.task``. Add a task by adding its package and one entry to
``TASKS``: the class built from the config, and the module of its
``main.py`` modes on a trained model (``predict``, ``analyze``,
``export_model``, ``import_torch``).
"""

import dataclasses
import types
from typing import Any, Callable

from etils import epath
import ml_collections

from cen_jax.tasks import segmentation
from cen_jax.tasks import translation
from cen_jax.tasks.multitask import modes as multitask_modes
from cen_jax.tasks.multitask.task import Multitask
from cen_jax.tasks.segmentation import modes as segmentation_modes
from cen_jax.tasks.translation import modes as translation_modes


@dataclasses.dataclass(frozen=True)
class TaskEntry:
  """A task: ``build(config, workdir)`` and its modes module."""
  build: Callable[[ml_collections.ConfigDict, epath.PathLike], Any]
  modes: types.ModuleType


TASKS: dict[str, TaskEntry] = {
    'segmentation': TaskEntry(segmentation.Segmentation, segmentation_modes),
    'translation': TaskEntry(translation.Translation, translation_modes),
    'multitask': TaskEntry(Multitask, multitask_modes),
}


def entry(config: ml_collections.ConfigDict) -> TaskEntry:
  """The entry of the task ``config.task`` names.

  Raises:
    ValueError: an unknown task name (the message lists the choices).
  """
  name = config.task
  if name not in TASKS:
    raise ValueError(f'Unknown task {name!r} (config.task); choose one of '
                     f'{sorted(TASKS)}.')
  return TASKS[name]


def build(config: ml_collections.ConfigDict, workdir: epath.PathLike) -> Any:
  """The task ``config.task`` names, built from ``config``."""
  return entry(config).build(config, workdir)
