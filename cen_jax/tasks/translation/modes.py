"""main.py's modes that use a trained translation model.

``predict`` (translate a folder of input-domain images), ``analyze`` (what
the generator exchanges), ``export`` (a parameters-only checkpoint and a
serialized ``jax.export`` artifact of the generator) and ``import_torch``
(official generator and discriminator weights into a workdir). Each
restores only the weights of a checkpoint, so a model can be used where its
training data is absent.
"""

import json
import pathlib
import re
from typing import Any, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from cen_jax.core import exchange_analysis
from cen_jax.tasks.translation import convert
from cen_jax.tasks.translation import input_pipeline
from cen_jax.tasks.translation import models
from cen_jax.tasks.translation import steps
from cen_jax.tasks.translation.task import Translation, to_uint8
from cen_jax.training import checkpointing
from cen_jax.training import loop
from data import taskonomy

EXPORT_FILE = 'generator.jaxexport'
PARAMS_DIR = 'params'
SPEC_FILE = 'export.json'
PLATFORMS = ('cpu', 'cuda', 'tpu')
# A Taskonomy file name without its domain: point_12_view_3_domain_rgb.png.
_TASKONOMY_NAME = re.compile(r'^(.*)_domain_[a-z_0-9]+$')


def _stem(path: pathlib.Path) -> str:
  m = _TASKONOMY_NAME.match(path.stem)
  return m.group(1) if m else path.stem


def find_examples(source: str, domains: Sequence[str]
                  ) -> dict[str, dict[str, pathlib.Path]]:
  """``{name: {domain: png}}`` of a folder with one sub-folder per domain.

  Files match across domains by name, with Taskonomy's ``_domain_<d>``
  suffix ignored (``point_1_view_2_domain_rgb.png`` and
  ``point_1_view_2_domain_normal.png`` are one example).

  Raises:
    FileNotFoundError: ``source`` or one of ``domains``' folders is missing,
      or a file of one domain has no partner in another (each named).
  """
  root = pathlib.Path(source)
  if not root.is_dir():
    raise FileNotFoundError(f'{root}: no such folder (predict wants one '
                            f'sub-folder per input domain: {list(domains)})')
  found = {}
  for d in domains:
    folder = root / d
    if not folder.is_dir():
      raise FileNotFoundError(
          f'{folder}: missing; predict reads one sub-folder per input '
          f'domain ({list(domains)})')
    found[d] = {_stem(p): p for p in sorted(folder.glob('*.png'))}
  names = sorted(set().union(*[set(v) for v in found.values()]))
  for d, files in found.items():
    absent = [n for n in names if n not in files]
    if absent:
      raise FileNotFoundError(
          f'{root / d} has no image for {absent[:5]} (found in another '
          'domain folder)')
  if not names:
    raise FileNotFoundError(f'{root}: no PNG files in {list(domains)}')
  return {n: {d: found[d][n] for d in domains} for n in names}


def _load(paths: dict[str, pathlib.Path], size: int) -> np.ndarray:
  """``(len(paths), size, size, 3)`` float32 in [-1, 1], official eval."""
  images = []
  for d, p in paths.items():
    image = taskonomy.load_domain(p, d)
    images.append(input_pipeline.resize(
        image, *input_pipeline.eval_size(*image.shape[:2], size)))
  shapes = {x.shape for x in images}
  if len(shapes) > 1:
    raise ValueError(f'{list(paths.values())}: sizes differ after resizing '
                     f'({sorted(shapes)})')
  return input_pipeline.normalise(images)


def predict(task: Translation, workdir: str, source: str, output_dir: str,
            *, checkpoint: str = 'best', output: str = 'ensemble',
            **unused: Any) -> dict[str, pathlib.Path]:
  """Translates every example of a folder; writes images and grids.

  ``source`` has one sub-folder per input domain (and, optionally, one for
  the target domain, shown in the grids). Written under ``output_dir``:
  ``<name>.png``, the chosen output (``'ensemble'`` or an input domain's
  branch); ``all/<name>_<output>.png`` for every output; and
  ``grid/<name>.png``: inputs | each branch | ensemble | target.

  With several targets (multitask), per target ``<target>/<name>.png``,
  ``all/<name>_<target>_<output>.png``, and one grid row per target (its
  target image when ``source`` has that domain's folder).

  Returns:
    ``{name: path of <name>.png}``, or ``{'<target>/<name>': path}``.
  """
  del unused  # Segmentation's options (crop_to_rgb) do not apply.
  if output not in task.output_names:
    raise ValueError(f'--prediction_output {output!r}: choose one of '
                     f'{list(task.output_names)}')
  variables, step = loop.restore_variables(task, workdir, checkpoint)
  generator = variables['generator']
  shown = tuple(t for t in task.targets
                if (pathlib.Path(source) / t).is_dir())
  examples = find_examples(source, task.inputs + shown)
  translate = jax.jit(lambda v, x, i: steps.translate(
      task.generator, v, x, i, task.protocol))
  out = pathlib.Path(output_dir)
  for sub in ('all', 'grid'):
    (out / sub).mkdir(parents=True, exist_ok=True)
  written = {}
  num_inputs = len(task.inputs)
  for i, (name, paths) in enumerate(examples.items()):
    images = _load(paths, task.crop_size)
    x = jnp.asarray(images[:num_inputs])[:, None]
    result = np.asarray(translate(generator, x, jnp.array([i], jnp.int32)))
    # (T, M + 1, H, W, 3), T = 1 for one target.
    result = result[..., 0, :, :, :].reshape(
        (len(task.targets), len(task.output_names)) + result.shape[-3:])
    rows = []
    for t, target in enumerate(task.targets):
      tag = f'{target}_' if task.multitask else ''
      for o, image in zip(task.output_names, result[t]):
        Image.fromarray(to_uint8(image)).save(
            out / 'all' / f'{name}_{tag}{o}.png')
      key = f'{target}/{name}' if task.multitask else name
      written[key] = out / f'{key}.png'
      written[key].parent.mkdir(parents=True, exist_ok=True)
      chosen = result[t, task.output_names.index(output)]
      Image.fromarray(to_uint8(chosen)).save(written[key])
      row = list(images[:num_inputs]) + list(result[t])
      if target in shown:
        row.append(images[num_inputs + shown.index(target)])
      rows.append(np.concatenate(row, axis=1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)),
                   constant_values=-1) for r in rows]
    Image.fromarray(to_uint8(np.concatenate(rows, axis=0))).save(
        out / 'grid' / f'{name}.png')
  logging.info('Translated %d examples with step %d into %s', len(written),
               step, out)
  return written


def analyze(task: Translation, workdir: str, output_dir: str | None = None,
            *, checkpoint: str = 'best') -> dict[str, pathlib.Path]:
  """Writes the exchange analysis of the generator's encoder INs.

  Files as segmentation's: ``exchange_fractions.png``,
  ``gamma_histograms.png`` and ``exchange_table.md`` (default directory
  ``<workdir>/analysis/<step>``).
  """
  variables, step = loop.restore_variables(task, workdir, checkpoint)
  out = pathlib.Path(output_dir or pathlib.Path(workdir) / 'analysis'
                     / str(step))
  paths, text = exchange_analysis.write_analysis(
      out, models.in_scales(variables['generator']['params']),
      task.generator.exchange, task.stream_names, norm_name='encoder IN',
      step=step)
  logging.info('Exchange analysis of step %d in %s:\n%s', step, out, text)
  return paths


def export_model(task: Translation, workdir: str, output_dir: str, *,
                 height: int, width: int, batch: int | None = None,
                 checkpoint: str = 'best', bake_variables: bool = True,
                 platforms: Sequence[str] = PLATFORMS
                 ) -> dict[str, pathlib.Path]:
  """Writes ``params/`` (generator and discriminator weights),
  ``generator.jaxexport`` (``inputs (M, B, H, W, 3) in [-1, 1] -> (M + 1,
  B, H, W, 3)``, every branch then the ensemble, under the task's eval
  protocol; with ``'official'`` example b's dropout is seeded by b;
  ``(T, M + 1, B, H, W, 3)`` with T targets) and ``export.json`` (the
  contract).

  Returns:
    ``{'params': dir, 'export': file, 'spec': file}``.
  """
  side = 2 ** task.generator.num_downs
  if height % side or width % side:
    raise ValueError(f'--export_size={height},{width}: the generator needs '
                     f'multiples of {side}')
  variables, step = loop.restore_variables(task, workdir, checkpoint)
  out = pathlib.Path(output_dir)
  paths = {'params': out / PARAMS_DIR, 'export': out / EXPORT_FILE,
           'spec': out / SPEC_FILE}
  checkpointing.save_variables(paths['params'], variables)

  def infer(generator_variables, x):
    index = jnp.arange(x.shape[1], dtype=jnp.int32)
    return steps.translate(task.generator, generator_variables, x, index,
                           task.protocol)

  b = 'b' if batch is None else str(batch)
  spec = jax.ShapeDtypeStruct(jax.export.symbolic_shape(
      f'{len(task.inputs)}, {b}, {height}, {width}, 3'), jnp.float32)
  exporter = jax.export.export
  if bake_variables:
    exported = exporter(jax.jit(lambda x: infer(variables['generator'], x)),
                        platforms=tuple(platforms))(spec)
  else:
    shapes = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype),
                          variables['generator'])
    exported = exporter(jax.jit(infer), platforms=tuple(platforms))(
        shapes, spec)
  paths['export'].parent.mkdir(parents=True, exist_ok=True)
  paths['export'].write_bytes(exported.serialize())
  paths['spec'].write_text(json.dumps({
      'checkpoint_step': step,
      'call': ('exported.call(x)' if bake_variables else
               'exported.call(generator_variables, x)'),
      'platforms': list(platforms),
      'protocol': task.protocol,
      'input': {'shape': [len(task.inputs), b, height, width, 3],
                'dtype': 'float32', 'domains': list(task.inputs),
                'normalisation': 'official per-domain preprocessing to '
                                 'uint8, then x / 127.5 - 1'},
      'output': {'shape': ([len(task.targets)] if task.multitask else [])
                          + [len(task.inputs) + 1, b, height, width, 3],
                 'dtype': 'float32', 'order': list(task.output_names),
                 'targets': list(task.targets),
                 'meaning': f'{", ".join(task.targets)} in [-1, 1]'},
  }, indent=2) + '\n')
  logging.info('Exported step %d to %s', step, out)
  return paths


def _discriminator_file(generator_file: str) -> pathlib.Path | None:
  """The official ``checkpoint-dis*.pkl`` beside a ``checkpoint-gen*.pkl``."""
  path = pathlib.Path(generator_file)
  if 'gen' not in path.name:
    return None
  candidate = path.with_name(path.name.replace('gen', 'dis', 1))
  return candidate if candidate.exists() else None


def import_torch(task: Translation, workdir: str, torch_checkpoint: str, *,
                 allow_pickle: bool = False) -> str:
  """Converts official ``checkpoint-gen*.pkl`` (and the ``checkpoint-dis``
  file beside it, when present) into ``workdir/checkpoints/imported``.

  Without the discriminator file the discriminator starts from the random
  initialisation (said in the log): evaluation needs only the generator.

  Returns:
    The directory written.

  Raises:
    ValueError: a multitask (several targets) run: the official code has
      no such models.
  """
  if task.multitask:
    raise ValueError(
        f'import_torch: {torch_checkpoint} cannot be imported into a run '
        f'with several targets {task.targets}: the official CEN code '
        'publishes single-target translation checkpoints only. Import into '
        'a run with one config.data.target.')
  template = loop.abstract_variables(task)
  variables = {'generator': convert.from_torch_state_dict(
      convert.load_torch_state_dict(torch_checkpoint,
                                    allow_pickle=allow_pickle),
      'generator', template['generator'])}
  dis = _discriminator_file(torch_checkpoint)
  if dis is None:
    logging.warning('No checkpoint-dis file beside %s: the discriminator '
                    'is randomly initialised', torch_checkpoint)
    # Jitted: the eager init of both networks takes ~10x longer.
    variables['discriminator'] = jax.device_get(
        task.start_variables(jax.random.key(0))['discriminator'])
  else:
    variables['discriminator'] = convert.from_torch_state_dict(
        convert.load_torch_state_dict(str(dis), allow_pickle=allow_pickle),
        'discriminator', template['discriminator'])
  out = loop.import_variables(workdir, variables)
  logging.info('Imported %s%s into %s', torch_checkpoint,
               f' and {dis}' if dis else '', out)
  return str(out)
