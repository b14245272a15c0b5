r"""cen-jax entry point: train, evaluate, import official weights, and more.

  python main.py --config=configs/quickstart.py --workdir=/tmp/cen_quickstart

Modes: ``train`` (train and evaluate, resuming from the workdir; default),
``eval`` (evaluate the best, latest, a given step, or imported checkpoint),
``import_torch`` (convert an official ``model-best.pth.tar`` into the
workdir). Any config field can be overridden: ``--config.optim.batch_size=12``.
"""

import logging as pylogging
import os

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from cen_jax import train

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Experiment config file (configs/*.py).',
    lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory.')
_MODE = flags.DEFINE_enum(
    'mode', 'train', ['train', 'eval', 'import_torch'], 'What to do.')
_CHECKPOINT = flags.DEFINE_string(
    'checkpoint', 'best',
    "eval: 'best', 'latest', 'imported' or a step number.")
_TORCH_CHECKPOINT = flags.DEFINE_string(
    'torch_checkpoint', None, 'import_torch: official model-best.pth.tar.')
_TORCH_ALLOW_PICKLE = flags.DEFINE_bool(
    'torch_allow_pickle', False,
    'import_torch: allow full unpickling (only for files you trust).')

_DISTRIBUTED = flags.DEFINE_bool(
    'distributed', False,
    'Call jax.distributed.initialize() first (multi-host: TPU pods, SLURM; '
    'also done when JAX_COORDINATOR_ADDRESS is set).')

flags.mark_flags_as_required(['config', 'workdir'])


class _DropOrbaxInfo(pylogging.Filter):
  # Orbax logs every save at INFO (a dozen lines each); keep its warnings.

  def filter(self, record: pylogging.LogRecord) -> bool:
    return (record.levelno >= pylogging.WARNING
            or '/orbax/' not in record.pathname)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.get_absl_handler().addFilter(_DropOrbaxInfo())
  _hide_gpus_from_tensorflow()
  if _DISTRIBUTED.value or 'JAX_COORDINATOR_ADDRESS' in os.environ:
    jax.distributed.initialize()
  logging.info('JAX process %d / %d, local devices: %s', jax.process_index(),
               jax.process_count(), jax.local_devices())
  config = _CONFIG.value
  if _MODE.value == 'train':
    train.train_and_evaluate(config, _WORKDIR.value)
  elif _MODE.value == 'eval':
    train.evaluate(config, _WORKDIR.value, _CHECKPOINT.value)
  elif _MODE.value == 'import_torch':
    if not _TORCH_CHECKPOINT.value:
      raise app.UsageError('--mode=import_torch needs --torch_checkpoint')
    train.import_torch(config, _WORKDIR.value, _TORCH_CHECKPOINT.value,
                       allow_pickle=_TORCH_ALLOW_PICKLE.value)


def _hide_gpus_from_tensorflow():
  # clu's TensorBoard writer imports TensorFlow; keep it off the GPUs/TPUs.
  try:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
  except ImportError:
    return
  tf.config.set_visible_devices([], 'GPU')
  tf.config.set_visible_devices([], 'TPU')


if __name__ == '__main__':
  app.run(main)
