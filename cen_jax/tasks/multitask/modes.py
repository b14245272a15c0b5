"""main.py's modes that use a trained multitask model.

``predict`` (every task's prediction for a folder of images), ``analyze``
(what the streams exchange), ``export`` (a parameters-only checkpoint and a
serialized ``jax.export`` artifact). ``import_torch`` refuses: no official
PyTorch checkpoints of the multitask scenarios exist. Each restores only the
weights of a workdir's checkpoint, so a model can be used where its training
data is absent.
"""

import functools
import json
import pathlib
from typing import Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from cen_jax.core import exchange_analysis
from cen_jax.tasks.multitask import input_pipeline
from cen_jax.tasks.multitask import steps
from cen_jax.tasks.multitask.task import Multitask
from cen_jax.tasks.segmentation import export
from cen_jax.tasks.segmentation import models
from cen_jax.training import checkpointing
from cen_jax.training import loop

EXPORT_FILE = 'inference.jaxexport'
PARAMS_DIR = 'params'
SPEC_FILE = 'export.json'
IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg')
DEPTH_SUFFIXES = ('.png', '.npy')
# 16-bit depth PNGs hold millimetres.
DEPTH_PNG_SCALE = 1000.0


def _find(folder: pathlib.Path, stem: str,
          suffixes: Sequence[str]) -> pathlib.Path | None:
  for s in suffixes:
    if (folder / f'{stem}{s}').is_file():
      return folder / f'{stem}{s}'
  return None


def find_examples(source: str, modalities: Sequence[str]
                  ) -> list[dict[str, pathlib.Path]]:
  """``[{modality: path}]`` for every RGB image of ``source/rgb/``.

  ``rgb/<name>.png|jpg`` (8-bit colour) and, where a stream reads depth,
  ``depth/<name>.png`` (16-bit, millimetres) or ``depth/<name>.npy``
  (float, metres; 0 = missing), and where one reads HHA, ``hha/<name>.png``
  (8-bit colour, as ``data.hha.depth_to_hha`` writes it).

  Raises:
    FileNotFoundError: no ``rgb/`` folder or images, or an image without its
      depth (the message names the file).
  """
  root = pathlib.Path(source).expanduser()
  rgb_dir = root / 'rgb'
  if not rgb_dir.is_dir():
    raise FileNotFoundError(f'{rgb_dir}: no such folder (predict reads '
                            f'rgb/ and {list(modalities)[1:] or "nothing"} '
                            'else)')
  stems = sorted(p.stem for p in rgb_dir.iterdir()
                 if p.suffix.lower() in IMAGE_SUFFIXES)
  if not stems:
    raise FileNotFoundError(f'{rgb_dir}: no {IMAGE_SUFFIXES} images')
  examples = []
  for stem in stems:
    paths = {'rgb': _find(rgb_dir, stem, IMAGE_SUFFIXES)}
    if 'depth' in modalities:
      depth = _find(root / 'depth', stem, DEPTH_SUFFIXES)
      if depth is None:
        raise FileNotFoundError(
            f'{paths["rgb"]} has no depth: expected {root / "depth" / stem}'
            f'{{{",".join(DEPTH_SUFFIXES)}}}')
      paths['depth'] = depth
    if 'hha' in modalities:
      hha = _find(root / 'hha', stem, ('.png',))
      if hha is None:
        raise FileNotFoundError(
            f'{paths["rgb"]} has no HHA: expected {root / "hha" / stem}.png')
      paths['hha'] = hha
    examples.append(paths)
  return examples


def load_sample(paths: dict[str, pathlib.Path]) -> dict[str, np.ndarray]:
  """``{'image': (H, W, 3) in [0, 1], 'depth': (H, W) metres}``.

  With an ``'hha'`` path, also ``'hha': (H, W, 3)`` in [0, 1].

  Raises:
    ValueError: an unreadable file, or depth or HHA of another size than
      the RGB (the message names both files).
  """
  try:
    with Image.open(paths['rgb']) as im:
      image = np.asarray(im.convert('RGB'), np.float32) / 255.0
  except OSError as e:
    raise ValueError(f'{paths["rgb"]}: unreadable image ({e})') from e
  sample = {'image': image}
  if 'depth' in paths:
    p = paths['depth']
    try:
      if p.suffix == '.npy':
        depth = np.load(p, allow_pickle=False).astype(np.float32)
      else:
        with Image.open(p) as im:
          depth = np.asarray(im, np.float32) / DEPTH_PNG_SCALE
    except (OSError, ValueError) as e:
      raise ValueError(f'{p}: unreadable depth ({e})') from e
    depth = np.squeeze(depth)
    if depth.shape != image.shape[:2]:
      raise ValueError(f'{p}: depth is {depth.shape} but {paths["rgb"]} is '
                       f'{image.shape[:2]}')
    sample['depth'] = depth
  if 'hha' in paths:
    p = paths['hha']
    try:
      with Image.open(p) as im:
        hha = np.asarray(im.convert('RGB'), np.float32) / 255.0
    except OSError as e:
      raise ValueError(f'{p}: unreadable HHA image ({e})') from e
    if hha.shape != image.shape:
      raise ValueError(f'{p}: HHA is {hha.shape[:2]} but {paths["rgb"]} is '
                       f'{image.shape[:2]}')
    sample['hha'] = hha
  return sample


def encode(task: str, pred: np.ndarray) -> Image.Image:
  """A task's ``(H, W, C)`` raw output as the image ``predict`` writes."""
  if task == 'semseg':
    return Image.fromarray(np.argmax(pred, axis=-1).astype(np.uint8))
  if task == 'depth':
    mm = np.clip(np.round(pred[..., 0] * DEPTH_PNG_SCALE), 0, 65535)
    return Image.fromarray(mm.astype(np.uint16))
  n = pred / np.maximum(np.linalg.norm(pred, axis=-1, keepdims=True), 1e-12)
  return Image.fromarray(
      np.clip(np.round((n + 1.0) * 127.5), 0, 255).astype(np.uint8))


def predict(task: Multitask, workdir: str, source: str, output_dir: str, *,
            checkpoint: str = 'best', output: str = 'ensemble',
            crop_to_rgb: bool = False) -> list[pathlib.Path]:
  """Every task's prediction for each image of ``source``.

  Writes ``<output_dir>/<task>/<name>.png``: ``semseg`` the class index
  (uint8), ``depth`` millimetres (uint16), ``normals`` the unit normal as
  colour, ``(n + 1) / 2 * 255``. At the input's size (bilinear).

  Args:
    task: the multitask task of the run.
    workdir: the run directory holding the checkpoint.
    source: a folder as ``find_examples`` reads.
    output_dir: where the predictions go.
    checkpoint: 'best', 'latest' or a step number.
    output: ``'ensemble'`` (every task's ensemble) or a stream name (that
      stream's task only).
    crop_to_rgb: unused (inputs must have the RGB's size); accepted so the
      modes share main.py's flags.

  Returns:
    The files written.
  """
  del crop_to_rgb
  names = task.streams.names
  if output != 'ensemble' and output not in names:
    raise ValueError(f'predict: unknown output {output!r}; choose '
                     f"'ensemble' or one of {names}")
  variables, step = loop.restore_variables(task, workdir, checkpoint)
  index = task.streams.input_index

  @functools.partial(jax.jit, compiler_options=task.compiler_options)
  def infer(x):  # (1, M, H, W, 3) -> {task: (S_t + 1, 1, H, W, C)}
    return steps.predictions(task.model, variables,
                             steps.stream_inputs(x, index), x.shape[2:4])

  written = []
  out = pathlib.Path(output_dir)
  for paths in find_examples(source, task.modalities):
    sample = load_sample(paths)
    x = input_pipeline.model_inputs(sample, task.modalities)[None]
    preds = jax.device_get(infer(jnp.asarray(x)))
    for t, p in preds.items():
      if output == 'ensemble':
        k = -1
      elif task.streams.tasks[names.index(output)] == t:
        k = task.output_names[t].index(output)
      else:
        continue
      path = out / t / f'{paths["rgb"].stem}.png'
      path.parent.mkdir(parents=True, exist_ok=True)
      encode(t, p[k, 0]).save(path)
      written.append(path)
  logging.info('Wrote %d predictions of step %d to %s', len(written), step,
               out)
  return written


def analyze(task: Multitask, workdir: str, output_dir: str | None = None,
            *, checkpoint: str = 'best') -> dict[str, pathlib.Path]:
  """The exchange analysis of a checkpoint, one curve per stream.

  Files as segmentation's ``analyze`` writes them
  (``exchange_fractions.png``, ``gamma_histograms.png``,
  ``exchange_table.md``), default under ``<workdir>/analysis/<step>``.
  """
  variables, step = loop.restore_variables(task, workdir, checkpoint)
  out = pathlib.Path(output_dir or pathlib.Path(workdir) / 'analysis'
                     / str(step))
  paths, text = exchange_analysis.write_analysis(
      out, models.bn2_scales(variables['params']), task.model.exchange,
      task.streams.names, norm_name='bn2', step=step)
  logging.info('Exchange analysis of step %d in %s:\n%s', step, out, text)
  return paths


def inference_fn(task: Multitask):
  """``(variables, x (M, B, H, W, 3)) -> {task: (B, H, W, C)}`` ensembles."""
  index = task.streams.input_index

  def infer(variables, x):
    preds = steps.predictions(
        task.model, variables, steps.stream_inputs(jnp.moveaxis(x, 0, 1),
                                                   index), x.shape[2:4])
    return {t: p[-1] for t, p in preds.items()}
  return infer


def export_model(task: Multitask, workdir: str, output_dir: str, *,
                 height: int, width: int, batch: int | None = None,
                 checkpoint: str = 'best', bake_variables: bool = True,
                 platforms: Sequence[str] = export.PLATFORMS
                 ) -> dict[str, pathlib.Path]:
  """``params/``, ``inference.jaxexport`` and ``export.json``.

  The artifact maps normalised inputs ``(M, B, H, W, 3)`` (the modalities
  in ``export.json``'s order) to ``{task: (B, H, W, C)}``, each task's
  ensemble output at the input size (semseg logits, depth in metres,
  normals unnormalised).
  """
  variables, step = loop.restore_variables(task, workdir, checkpoint)
  out = pathlib.Path(output_dir)
  paths = {'params': out / PARAMS_DIR, 'export': out / EXPORT_FILE,
           'spec': out / SPEC_FILE}
  checkpointing.save_variables(paths['params'], variables)
  infer = inference_fn(task)
  b = 'b' if batch is None else str(batch)
  spec = jax.ShapeDtypeStruct(jax.export.symbolic_shape(
      f'{len(task.modalities)}, {b}, {height}, {width}, 3'), jnp.float32)
  exporter = jax.export.export
  if bake_variables:
    exported = exporter(jax.jit(lambda x: infer(variables, x)),
                        platforms=tuple(platforms))(spec)
  else:
    vspec = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype),
                         variables)
    exported = exporter(jax.jit(infer), platforms=tuple(platforms))(
        vspec, spec)
  export.save_export(paths['export'], exported)
  shapes = dict(task.streams.heads)
  bb = 'B' if batch is None else batch
  paths['spec'].write_text(json.dumps({
      'checkpoint_step': step,
      'call': 'exported.call(x)' if bake_variables
              else 'exported.call(variables, x)',
      'platforms': list(platforms),
      'input': {
          'shape': [len(task.modalities), bb, height, width, 3],
          'dtype': 'float32', 'modalities': list(task.modalities),
          'normalisation': {
              'rgb': 'image in [0, 1], minus mean, divided by std',
              'depth': 'metres, tiled to 3 channels',
              'hha': 'HHA image in [0, 1], minus mean, divided by std',
              'mean': list(input_pipeline.RGB_MEAN),
              'std': list(input_pipeline.RGB_STD)},
      },
      'output': {t: {'shape': [bb, height, width, c], 'dtype': 'float32'}
                 for t, c in shapes.items()},
      'meaning': {'semseg': 'logits; argmax over the last axis',
                  'depth': 'metres', 'normals': 'direction, unnormalised'},
  }, indent=2) + '\n')
  logging.info('Exported step %d to %s', step, out)
  return paths


def import_torch(task: Multitask, workdir: str, torch_checkpoint: str, *,
                 allow_pickle: bool = False) -> str:
  """Refuses: the official code has no multitask models to import."""
  del task, workdir, allow_pickle
  raise ValueError(
      f'import_torch: {torch_checkpoint} cannot be imported into a '
      'multitask run: the official CEN code publishes no multitask '
      "checkpoints. Import segmentation weights with config.task = "
      "'segmentation'.")
