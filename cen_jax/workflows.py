"""main.py's modes that use a trained model: predict, analyze, export.

Like ``train``, this module reads configs; the work itself is done by
``predict``, ``inference``, ``analysis`` and ``export``. Each mode restores
the model of a workdir (the best, the latest, a given step, or imported
official weights; see ``train.restore_state``) without needing the dataset,
so a model can be used on a machine where its training data is absent.
"""

import json
import pathlib
from typing import Any, Sequence

from absl import logging
from etils import epath
import jax
import ml_collections

from cen_jax import analysis
from cen_jax import checkpointing
from cen_jax import export
from cen_jax import inference
from cen_jax import input_pipeline
from cen_jax import models
from cen_jax import predict
from cen_jax import train

EXPORT_FILE = 'inference.jaxexport'
PARAMS_DIR = 'params'
SPEC_FILE = 'export.json'


def restore_variables(config: ml_collections.ConfigDict, workdir: str,
                      checkpoint: str = 'best') -> tuple[Any, int]:
  """The ``{'params', 'batch_stats'}`` of a workdir's checkpoint.

  Args:
    config: the run's config.
    workdir: the run directory.
    checkpoint: 'best', 'latest', 'imported' or a step number.

  Returns:
    ``(variables on one device, step)``; the step is 0 for imported weights.
  """
  s = train.model_setup(config)
  state = train.restore_state(s, epath.Path(workdir), checkpoint)
  variables = {'params': state['params'], 'batch_stats': state['batch_stats']}
  # Inference runs per image on one device; keep no replica elsewhere.
  variables = jax.device_put(variables, jax.local_devices()[0])
  return variables, int(jax.device_get(state['step']))


def dataset_class_names(config: ml_collections.ConfigDict,
                        workdir: str) -> tuple[str, ...] | None:
  """The dataset's class names, or None where it is not prepared here."""
  try:
    source = input_pipeline.get_source(
        config.data.name, config.data.eval_split,
        data_dir=train.data_dir(config, epath.Path(workdir)))
  except FileNotFoundError as e:
    logging.warning('Class names unavailable, using indices: %s', e)
    return None
  names = input_pipeline.class_names(source)
  if len(names) != config.model.num_classes:
    raise ValueError(
        f'config.model.num_classes = {config.model.num_classes} but dataset '
        f'{config.data.name!r} has {len(names)} classes')
  return names


def parse_output(output: str) -> inference.Output:
  """``'ensemble'``, ``'all'``, a modality name, or an index given as text."""
  return int(output) if output.isdigit() else output


def predict_images(config: ml_collections.ConfigDict, workdir: str,
                   source: str, output_dir: str, *,
                   checkpoint: str = 'best', output: str = 'ensemble',
                   crop_to_rgb: bool = False) -> list[predict.Prediction]:
  """Segments a folder (``rgb/``, ``depth/``, ...) or a list file.

  Test-time scales and flipping come from ``config.eval``; inputs of any
  size are padded to the network stride and cropped back.

  Args:
    config: the run's config (model, modalities, eval scales).
    workdir: the run directory holding the checkpoint.
    source: input folder or list file (see ``cen_jax.predict``).
    output_dir: where the masks, colour masks and overlays go.
    checkpoint: which checkpoint (see :func:`restore_variables`).
    output: which output's logits: 'ensemble', a modality name or index.
    crop_to_rgb: centre-crop larger inputs to the RGB's size.

  Returns:
    The files written, one entry per image.
  """
  if output == 'all':
    raise ValueError("predict writes one mask per image: choose 'ensemble' "
                     f'or one of {tuple(config.data.modalities)}')
  variables, step = restore_variables(config, workdir, checkpoint)
  model = models.build(config.model)
  modalities = tuple(config.data.modalities)
  predict_fn = inference.make_predict_fn(
      model.apply, variables, scales=tuple(config.eval.scales),
      flip=config.eval.flip, output=parse_output(output),
      modality_names=modalities)
  logging.info('Predicting %s with the %s output of step %d, scales %s%s',
               source, output, step, tuple(config.eval.scales),
               ' + flip' if config.eval.flip else '')
  written = predict.predict_folder(
      predict_fn, source, output_dir, modalities=modalities,
      num_classes=config.model.num_classes,
      class_names=dataset_class_names(config, workdir),
      crop_to_rgb=crop_to_rgb)
  logging.info('Wrote %d predictions to %s', len(written), output_dir)
  return written


def analyze(config: ml_collections.ConfigDict, workdir: str,
            output_dir: str | None = None, *,
            checkpoint: str = 'best') -> dict[str, pathlib.Path]:
  """Writes the exchange analysis of a checkpoint.

  Files: ``exchange_fractions.png`` (exchanged fraction of channels per bn2
  layer and modality), ``gamma_histograms.png`` (bn2 |gamma| per modality,
  threshold marked) and ``exchange_table.md`` (the fractions as a table).

  Args:
    config: the run's config (model and exchange variant).
    workdir: the run directory holding the checkpoint.
    output_dir: default ``<workdir>/analysis/<step>``.
    checkpoint: which checkpoint (see :func:`restore_variables`).

  Returns:
    ``{'fractions': path, 'histograms': path, 'table': path}``.
  """
  variables, step = restore_variables(config, workdir, checkpoint)
  out = pathlib.Path(output_dir or pathlib.Path(workdir) / 'analysis'
                     / str(step))
  out.mkdir(parents=True, exist_ok=True)
  names = tuple(config.data.modalities)
  table = analysis.exchange_table(variables['params'],
                                  train.exchange_mask_fn(config))
  text = analysis.format_exchange_table(table, names)
  paths = {'fractions': out / 'exchange_fractions.png',
           'histograms': out / 'gamma_histograms.png',
           'table': out / 'exchange_table.md'}
  paths['fractions'].write_bytes(analysis.figure_to_png(
      analysis.plot_exchange_fractions(table, names)))
  paths['histograms'].write_bytes(analysis.figure_to_png(
      analysis.plot_gamma_histograms(variables['params'],
                                     train.exchange_threshold(config), names)))
  paths['table'].write_text(
      f'Exchanged bn2 channels, {config.model.exchange} exchange, '
      f'checkpoint step {step}\n\n{text}\n')
  logging.info('Exchange analysis of step %d in %s:\n%s', step, out, text)
  return paths


def export_model(config: ml_collections.ConfigDict, workdir: str,
                 output_dir: str, *, height: int, width: int,
                 batch: int | None = None, checkpoint: str = 'best',
                 bake_variables: bool = True,
                 platforms: Sequence[str] = export.PLATFORMS
                 ) -> dict[str, pathlib.Path]:
  """Writes the deployable artifacts of a checkpoint.

  * ``params/``: a parameters-only Orbax checkpoint (``params`` and
    ``batch_stats``, no optimiser state);
  * ``inference.jaxexport``: the serialized ``jax.export`` of
    ``normalised inputs (M, B, H, W, 3) -> logits (M + 1, B, H, W, K)``
    (every modality, then the ensemble, at the input size, with
    ``config.eval``'s scales and flip), for CPU, CUDA and TPU;
  * ``export.json``: what the artifact expects and returns.

  Args:
    config: the run's config.
    workdir: the run directory holding the checkpoint.
    output_dir: the export directory (created).
    height: static input height.
    width: static input width.
    batch: static batch size, or None for a symbolic one.
    checkpoint: which checkpoint (see :func:`restore_variables`).
    bake_variables: embed the weights in the artifact (it then takes the
      inputs alone) or take them as a first argument.
    platforms: lowering platforms.

  Returns:
    ``{'params': dir, 'export': file, 'spec': file}``.
  """
  variables, step = restore_variables(config, workdir, checkpoint)
  out = pathlib.Path(output_dir)
  paths = {'params': out / PARAMS_DIR, 'export': out / EXPORT_FILE,
           'spec': out / SPEC_FILE}
  checkpointing.save_variables(paths['params'], variables)
  modalities = tuple(config.data.modalities)
  exported = export.export_inference(
      models.build(config.model), variables,
      num_modalities=len(modalities), height=height, width=width,
      batch=batch, output='all', scales=tuple(config.eval.scales),
      flip=config.eval.flip, bake_variables=bake_variables,
      platforms=platforms)
  export.save_export(paths['export'], exported)
  spec = export_spec(config, step=step, height=height, width=width,
                     batch=batch, bake_variables=bake_variables,
                     platforms=platforms,
                     class_names=dataset_class_names(config, workdir))
  paths['spec'].write_text(json.dumps(spec, indent=2) + '\n')
  logging.info('Exported step %d to %s', step, out)
  return paths


def export_spec(config: ml_collections.ConfigDict, *, step: int, height: int,
                width: int, batch: int | None, bake_variables: bool,
                platforms: Sequence[str],
                class_names: Sequence[str] | None) -> dict[str, Any]:
  """The contract of an exported artifact, as written to ``export.json``."""
  modalities = list(config.data.modalities)
  k = config.model.num_classes
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
          'shape': [len(modalities) + 1, b, height, width, k],
          'dtype': 'float32',
          'order': modalities + ['ensemble'],
          'meaning': 'logits at the input size; argmax over the last axis',
      },
      'eval_scales': list(config.eval.scales),
      'eval_flip': bool(config.eval.flip),
      'class_names': list(class_names) if class_names else None,
  }
