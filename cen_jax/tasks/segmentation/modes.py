"""main.py's modes that use a trained segmentation model.

``predict`` (masks for a folder or list of RGB-D images), ``analyze`` (what
the model exchanges), ``export`` (a parameters-only checkpoint and a
serialized ``jax.export`` artifact) and ``import_torch`` (official weights
into a workdir). Each restores only the weights of a workdir's checkpoint
(the best, the latest, a given step, or imported official weights; see
``cen_jax.training.loop.restore_variables``), so a model can be used on a
machine where its training data is absent.
"""

import json
import pathlib
from typing import Any, Sequence

from absl import logging

from cen_jax.core import exchange_analysis
from cen_jax.tasks.segmentation import convert
from cen_jax.tasks.segmentation import export
from cen_jax.tasks.segmentation import inference
from cen_jax.tasks.segmentation import input_pipeline
from cen_jax.tasks.segmentation import models
from cen_jax.tasks.segmentation import predict as predict_lib
from cen_jax.tasks.segmentation.task import Segmentation
from cen_jax.training import checkpointing
from cen_jax.training import loop

EXPORT_FILE = 'inference.jaxexport'
PARAMS_DIR = 'params'
SPEC_FILE = 'export.json'


def parse_output(output: str) -> inference.Output:
  """``'ensemble'``, ``'all'``, a modality name, or an index given as text."""
  return int(output) if output.isdigit() else output


def predict(task: Segmentation, workdir: str, source: str, output_dir: str,
            *, checkpoint: str = 'best', output: str = 'ensemble',
            crop_to_rgb: bool = False) -> list[predict_lib.Prediction]:
  """Segments a folder (``rgb/``, ``depth/``, ...) or a list file.

  Test-time scales and flipping are the task's (``config.eval``); inputs of
  any size are padded to the network stride and cropped back.

  Args:
    task: the segmentation task of the run.
    workdir: the run directory holding the checkpoint.
    source: input folder or list file (see ``predict``).
    output_dir: where the masks, colour masks and overlays go.
    checkpoint: 'best', 'latest', 'imported' or a step number.
    output: which output's logits: 'ensemble', a modality name or index.
    crop_to_rgb: centre-crop larger inputs to the RGB's size.

  Returns:
    The files written, one entry per image.
  """
  if output == 'all':
    raise ValueError("predict writes one mask per image: choose 'ensemble' "
                     f'or one of {task.modalities}')
  variables, step = loop.restore_variables(task, workdir, checkpoint)
  predict_fn = inference.make_predict_fn(
      task.model.apply, variables, scales=task.scales, flip=task.flip,
      output=parse_output(output), modality_names=task.modalities,
      compiler_options=task.compiler_options)
  logging.info('Predicting %s with the %s output of step %d, scales %s%s',
               source, output, step, task.scales,
               ' + flip' if task.flip else '')
  written = predict_lib.predict_folder(
      predict_fn, source, output_dir, modalities=task.modalities,
      num_classes=task.num_classes,
      class_names=task.dataset_class_names(), crop_to_rgb=crop_to_rgb)
  logging.info('Wrote %d predictions to %s', len(written), output_dir)
  return written


def analyze(task: Segmentation, workdir: str, output_dir: str | None = None,
            *, checkpoint: str = 'best') -> dict[str, pathlib.Path]:
  """Writes the exchange analysis of a checkpoint.

  Files: ``exchange_fractions.png`` (exchanged fraction of channels per bn2
  layer and modality), ``gamma_histograms.png`` (bn2 |gamma| per modality,
  threshold marked) and ``exchange_table.md`` (the fractions as a table).

  Args:
    task: the segmentation task of the run.
    workdir: the run directory holding the checkpoint.
    output_dir: default ``<workdir>/analysis/<step>``.
    checkpoint: 'best', 'latest', 'imported' or a step number.

  Returns:
    ``{'fractions': path, 'histograms': path, 'table': path}``.
  """
  variables, step = loop.restore_variables(task, workdir, checkpoint)
  out = pathlib.Path(output_dir or pathlib.Path(workdir) / 'analysis'
                     / str(step))
  paths, text = exchange_analysis.write_analysis(
      out, models.bn2_scales(variables['params']), task.model.exchange,
      task.modalities, norm_name='bn2', step=step)
  logging.info('Exchange analysis of step %d in %s:\n%s', step, out, text)
  return paths


def export_model(task: Segmentation, workdir: str, output_dir: str, *,
                 height: int, width: int, batch: int | None = None,
                 checkpoint: str = 'best', bake_variables: bool = True,
                 platforms: Sequence[str] = export.PLATFORMS
                 ) -> dict[str, pathlib.Path]:
  """Writes the deployable artifacts of a checkpoint.

  * ``params/``: a parameters-only Orbax checkpoint (``params`` and
    ``batch_stats``, no optimiser state);
  * ``inference.jaxexport``: the serialized ``jax.export`` of
    ``normalised inputs (M, B, H, W, 3) -> logits (M + 1, B, H, W, K)``
    (every modality, then the ensemble, at the input size, with the task's
    test-time scales and flip), for CPU, CUDA and TPU;
  * ``export.json``: what the artifact expects and returns.

  Args:
    task: the segmentation task of the run.
    workdir: the run directory holding the checkpoint.
    output_dir: the export directory (created).
    height: static input height.
    width: static input width.
    batch: static batch size, or None for a symbolic one.
    checkpoint: 'best', 'latest', 'imported' or a step number.
    bake_variables: embed the weights in the artifact (it then takes the
      inputs alone) or take them as a first argument.
    platforms: lowering platforms.

  Returns:
    ``{'params': dir, 'export': file, 'spec': file}``.
  """
  variables, step = loop.restore_variables(task, workdir, checkpoint)
  out = pathlib.Path(output_dir)
  paths = {'params': out / PARAMS_DIR, 'export': out / EXPORT_FILE,
           'spec': out / SPEC_FILE}
  checkpointing.save_variables(paths['params'], variables)
  exported = export.export_inference(
      task.model, variables, num_modalities=len(task.modalities),
      height=height, width=width, batch=batch, output='all',
      scales=task.scales, flip=task.flip, bake_variables=bake_variables,
      platforms=platforms)
  export.save_export(paths['export'], exported)
  spec = export_spec(task, step=step, height=height, width=width,
                     batch=batch, bake_variables=bake_variables,
                     platforms=platforms,
                     class_names=task.dataset_class_names())
  paths['spec'].write_text(json.dumps(spec, indent=2) + '\n')
  logging.info('Exported step %d to %s', step, out)
  return paths


def export_spec(task: Segmentation, *, step: int, height: int, width: int,
                batch: int | None, bake_variables: bool,
                platforms: Sequence[str],
                class_names: Sequence[str] | None) -> dict[str, Any]:
  """The contract of an exported artifact, as written to ``export.json``."""
  modalities = list(task.modalities)
  b = 'B' if batch is None else batch
  return {
      'checkpoint_step': step,
      'call': 'exported.call(x)' if bake_variables
              else 'exported.call(variables, x)',
      'platforms': list(platforms),
      'input': {
          'shape': [len(modalities), b, height, width, 3],
          'dtype': 'float32',
          'modalities': modalities,
          'normalisation': {
              'rgb': 'x / 255, minus mean, divided by std',
              'hha': 'as rgb',
              'depth': 'uint16 depth (metres x 5000) times 1/5000, '
                       'tiled to 3 channels',
              'mean': list(input_pipeline.RGB_MEAN),
              'std': list(input_pipeline.RGB_STD),
          },
      },
      'output': {
          'shape': [len(modalities) + 1, b, height, width, task.num_classes],
          'dtype': 'float32',
          'order': modalities + ['ensemble'],
          'meaning': 'logits at the input size; argmax over the last axis',
      },
      'eval_scales': list(task.scales),
      'eval_flip': task.flip,
      'class_names': list(class_names) if class_names else None,
  }


def import_torch(task: Segmentation, workdir: str, torch_checkpoint: str, *,
                 allow_pickle: bool = False) -> str:
  """Converts an official ``model-best.pth.tar`` into ``workdir``.

  The variables land in ``workdir/checkpoints/imported``, which ``eval``
  evaluates when there is no trained checkpoint and ``train`` starts from.

  Returns:
    The directory written.
  """
  template = loop.abstract_variables(task)
  state_dict = convert.load_torch_checkpoint(torch_checkpoint,
                                             allow_pickle=allow_pickle)
  variables = convert.from_torch_state_dict(
      state_dict, len(task.modalities), template=template)
  out = loop.import_variables(workdir, variables)
  logging.info('Imported %s into %s', torch_checkpoint, out)
  return str(out)
