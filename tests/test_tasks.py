"""The task table, every shipped config, and the layering of the packages."""

import ast
import pathlib

import jax
import pytest

from cen_jax import tasks
from cen_jax.training import loop
from configs import default
from configs import quickstart
from tests import paths

CONFIGS = sorted(p.stem for p in (paths.REPO / 'configs').glob('*.py')
                 if p.stem != '__init__')


def _load(name):
  module = __import__(f'configs.{name}', fromlist=['get_config'])
  return module.get_config()


@pytest.mark.parametrize('name', CONFIGS)
def test_every_config_names_a_task_that_builds_without_data(name, tmp_path):
  config = _load(name)
  assert config.task in tasks.TASKS
  task = tasks.build(config, tmp_path)
  # The variables' shapes come from the model alone: no dataset is read.
  variables = loop.abstract_variables(task)
  networks = {'segmentation': [variables], 'multitask': [variables],
              'translation': [variables.get('generator'),
                              variables.get('discriminator')]}[config.task]
  for net in networks:
    assert set(net) == {'params', 'batch_stats'}
  leaves = jax.tree.leaves([net['params'] for net in networks])
  assert all(leaf.dtype == 'float32' for leaf in leaves)
  assert task.best.mode in ('max', 'min')
  # The CPU's conv library for the train and eval steps (core.kernels);
  # translation's networks use XLA's defaults.
  cpu = {'xla_cpu_experimental_ynn_fusion_type':
         'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT'}
  want = None if config.task == 'translation' or (
      config.model.get('kernels', 'auto') == 'xla') else cpu
  assert getattr(task, 'compiler_options', None) == want
  trainer = task.trainer_for(10)
  assert getattr(trainer, 'compiler_options', None) == want
  assert not (tmp_path / 'tfds').exists()


def test_unknown_task_lists_the_choices(tmp_path):
  config = default.get_config()
  config.task = 'detection'
  with pytest.raises(ValueError,
                     match=r"'detection'.*\['multitask', 'segmentation', "
                     r"'translation'\]"):
    tasks.build(config, tmp_path)


def _imports(path: pathlib.Path) -> set[str]:
  """Top-level modules (dotted, first two parts) ``path`` imports."""
  names = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      names |= {a.name for a in node.names}
    elif isinstance(node, ast.ImportFrom) and node.module:
      names.add(node.module)
  return names


def _package_imports(package: str) -> set[str]:
  root = paths.REPO / package.replace('.', '/')
  out = set()
  for path in root.rglob('*.py'):
    out |= _imports(path)
  return out


@pytest.mark.parametrize('package, forbidden', [
    # Data is read by the library, never the other way round.
    ('data', ('cen_jax',)),
    # Shared model pieces know no loop and no task.
    ('cen_jax.core', ('cen_jax.training', 'cen_jax.tasks', 'cen_jax.run')),
    # The loop drives tasks through its interface, never by name.
    ('cen_jax.training', ('cen_jax.tasks', 'cen_jax.run', 'cen_jax.core',
                          'data', 'ml_collections')),
    # Tasks never reach for the entry points.
    ('cen_jax.tasks', ('cen_jax.run',)),
])
def test_lower_layers_never_import_higher_ones(package, forbidden):
  bad = sorted(name for name in _package_imports(package)
               if any(name == f or name.startswith(f + '.')
                      for f in forbidden))
  assert not bad, f'{package} imports {bad}'


def test_num_classes_other_than_the_datasets_is_named(tmp_path):
  config = quickstart.get_config()
  config.data.name = 'synthetic_rgbd/tiny'
  config.data.data_dir = str(tmp_path / 'tfds')
  config.model.num_classes = 40
  task = tasks.build(config, tmp_path)
  with pytest.raises(ValueError, match=r"num_classes = 40 but dataset "
                     r"'synthetic_rgbd/tiny' has 7 classes"):
    task.trainer()
