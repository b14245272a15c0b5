r"""cen-jax entry point: train, evaluate, import official weights, and more.

  python main.py --config=configs/quickstart.py --workdir=/tmp/cen_quickstart

Modes: ``train`` (train and evaluate, resuming from the workdir; default),
``eval`` (evaluate the best, latest, a given step, or imported checkpoint;
needs only the eval split),
``import_torch`` (convert an official ``model-best.pth.tar``, or a
translation ``checkpoint-gen.pkl`` with its ``checkpoint-dis.pkl``, into the
workdir), ``predict`` (segment a folder or list of RGB-D images; translate a
folder of input-domain images),
``analyze`` (plot what the model exchanges) and ``export`` (a
parameters-only checkpoint and a serialized ``jax.export`` artifact), for
the task ``config.task`` names (``cen_jax/tasks/``). Any config field can be
overridden: ``--config.optim.batch_size=12``.

  python main.py --config=configs/nyud_cen.py --workdir=runs/nyud_cen \
    --mode=predict --input=my_rgbd/ --output=predictions/
  python main.py --config=configs/nyud_cen.py --workdir=runs/nyud_cen \
    --mode=analyze
  python main.py --config=configs/nyud_cen.py --workdir=runs/nyud_cen \
    --mode=export --output=exported/ --export_size=480,640
"""

if __name__ == '__main__':
  # Restart once with glibc settings that keep freed memory (before the
  # heavy imports): every CPU step would otherwise page-fault its buffers in
  # again. See cen_jax/training/host_memory.py.
  from cen_jax.training import host_memory  # pylint: disable=g-import-not-at-top
  host_memory.reexec_with_kept_memory()

import logging as pylogging
import os

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Experiment config file (configs/*.py).',
    lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory.')
_MODE = flags.DEFINE_enum(
    'mode', 'train',
    ['train', 'eval', 'import_torch', 'predict', 'analyze', 'export'],
    'What to do.')
_CHECKPOINT = flags.DEFINE_string(
    'checkpoint', 'best',
    "eval, predict, analyze, export: 'best', 'latest', 'imported' or a step "
    'number.')
_INPUT = flags.DEFINE_string(
    'input', None,
    'predict: segmentation: a folder with rgb/ and depth/ (or hha/) of '
    'matching file names, or a tab-separated list file (rgb, [mask,] '
    'depth); translation: a folder with one sub-folder per input domain '
    '(and optionally the target domain, shown in the grids).')
_OUTPUT = flags.DEFINE_string(
    'output', None,
    'predict, export: output folder; analyze: default '
    '<workdir>/analysis/<step>.')
_PREDICTION_OUTPUT = flags.DEFINE_string(
    'prediction_output', 'ensemble',
    "predict: which output: 'ensemble' or a modality (segmentation: name "
    "or index; translation: an input domain's branch).")
_CROP_TO_RGB = flags.DEFINE_bool(
    'crop_to_rgb', False,
    'predict: centre-crop inputs larger than the RGB to its size (the '
    'official NYUDv2 release, whose depth is larger than its RGB).')
_EXPORT_SIZE = flags.DEFINE_list(
    'export_size', None, 'export: the static input size H,W, e.g. 480,640.')
_EXPORT_BATCH = flags.DEFINE_integer(
    'export_batch', 0, 'export: static batch size; 0 = symbolic.')
_EXPORT_BAKE = flags.DEFINE_bool(
    'export_bake_params', True,
    'export: embed the weights in the artifact (call(x)); else it takes '
    'them as its first argument (call(variables, x)).')
_TORCH_CHECKPOINT = flags.DEFINE_string(
    'torch_checkpoint', None,
    'import_torch: official model-best.pth.tar (segmentation) or '
    'checkpoint-gen*.pkl (translation; checkpoint-dis*.pkl beside it is '
    'imported too).')
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
  # The command line first: a mistake is reported in a second or two, not
  # after the heavy imports (TensorFlow alone takes seconds).
  config, workdir = _CONFIG.value, _WORKDIR.value
  config.keys()  # A config file that failed to load raises its error here.
  export_size = _check_mode_flags()
  from cen_jax import run  # pylint: disable=g-import-not-at-top
  logging.get_absl_handler().addFilter(_DropOrbaxInfo())
  _hide_gpus_from_tensorflow()
  if _DISTRIBUTED.value or 'JAX_COORDINATOR_ADDRESS' in os.environ:
    jax.distributed.initialize()
  logging.info('JAX process %d / %d, local devices: %s', jax.process_index(),
               jax.process_count(), jax.local_devices())
  if _MODE.value == 'train':
    run.train_and_evaluate(config, workdir)
  elif _MODE.value == 'eval':
    run.evaluate(config, workdir, _CHECKPOINT.value)
  elif _MODE.value == 'import_torch':
    run.import_torch(config, workdir, _TORCH_CHECKPOINT.value,
                     allow_pickle=_TORCH_ALLOW_PICKLE.value)
  elif _MODE.value == 'predict':
    run.predict(config, workdir, _INPUT.value, _OUTPUT.value,
                checkpoint=_CHECKPOINT.value,
                output=_PREDICTION_OUTPUT.value,
                crop_to_rgb=_CROP_TO_RGB.value)
  elif _MODE.value == 'analyze':
    run.analyze(config, workdir, _OUTPUT.value, checkpoint=_CHECKPOINT.value)
  elif _MODE.value == 'export':
    height, width = export_size
    run.export_model(
        config, workdir, _OUTPUT.value, height=height, width=width,
        batch=_EXPORT_BATCH.value or None, checkpoint=_CHECKPOINT.value,
        bake_variables=_EXPORT_BAKE.value)


def _check_mode_flags() -> tuple[int, int] | None:
  """The flags the mode needs; for export, its ``(height, width)``."""
  if _MODE.value == 'import_torch' and not _TORCH_CHECKPOINT.value:
    raise app.UsageError('--mode=import_torch needs --torch_checkpoint')
  if _MODE.value == 'predict' and not (_INPUT.value and _OUTPUT.value):
    raise app.UsageError('--mode=predict needs --input and --output')
  if _MODE.value == 'export':
    size = _export_size()
    if not _OUTPUT.value:
      raise app.UsageError('--mode=export needs --output')
    return size
  return None


def _export_size() -> tuple[int, int]:
  size = _EXPORT_SIZE.value or []
  if len(size) != 2 or not all(v.strip().isdigit() and int(v) > 0
                               for v in size):
    raise app.UsageError(
        f'--mode=export needs --export_size=H,W (two positive integers), '
        f'got {",".join(size) or "nothing"}')
  return int(size[0]), int(size[1])


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
