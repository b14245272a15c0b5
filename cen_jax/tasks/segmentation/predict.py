"""Segmentation masks for a folder (or list) of RGB-D images.

Inputs come in one of two forms:

* a directory with ``rgb/`` and one sub-folder per other modality
  (``depth/``, ``hha/``) holding files of the same names, e.g.
  ``rgb/0001.png`` with ``depth/0001.png``; sub-folders of modalities not
  asked for are ignored;
* a list file with one tab-separated line per image, in the NYUDv2 list
  column convention (reference §5.1): ``rgb <TAB> mask <TAB> depth`` (the
  official lists; the mask column is not read) or ``rgb <TAB> depth``, paths
  relative to ``root`` (default: the list file's folder). The last column
  holds the one non-RGB modality in ``modalities`` (a depth or an HHA
  image); a list therefore supplies at most two modalities. Note that
  ``nyud_samples/list.txt`` in the shared test data has the columns ``rgb,
  depth, label``, which is not this convention.

The RGB image is always read: it names the outputs and is the overlay's
background. Images are read and normalised as the evaluation pipeline does
(``data.folder`` readers: 8-bit RGB/HHA, 16-bit depth; then
``input_pipeline.normalise``, depth tiled to 3 channels). Every modality must
have the RGB's size; ``crop_to_rgb=True`` centre-crops larger inputs to it
instead (the official ``CropAlignToMask``, for CEN's NYUDv2 release whose
depth is larger than the cropped RGB).

For each image ``<name>`` the outputs are ``mask/<name>.png`` (uint8 class
indices ``0..K-1``), ``color/<name>.png`` (``palette(K)[mask]``) and
``overlay/<name>.png`` (the colour mask alpha-blended onto the RGB), plus one
``legend.txt`` (index, class name, colour). Problems (unpaired or missing
files, unreadable images, size mismatches) raise an error naming the file;
pairing and existence are checked for all images before any prediction,
readability and sizes as each image is read.
"""

import pathlib
from typing import Callable, NamedTuple, Sequence

import numpy as np
from PIL import Image
import tqdm

from cen_jax.tasks.segmentation import input_pipeline
from data import folder

DataError = folder.DataError
PredictFn = Callable[[np.ndarray], np.ndarray]


class Example(NamedTuple):
  """One image to segment.

  Attributes:
    name: output name without suffix (may contain ``/`` for list entries).
    paths: ``{'rgb': path, modality: path, ...}``.
  """
  name: str
  paths: dict[str, pathlib.Path]


class Prediction(NamedTuple):
  """The files written for one image."""
  name: str
  mask: pathlib.Path
  color: pathlib.Path
  overlay: pathlib.Path


def palette(num_classes: int) -> np.ndarray:
  """Distinct colours for ``num_classes`` classes, PASCAL VOC style.

  The official visualisation indexes a colour map by ``label + 1``, so that
  the ignore label 255 wraps to black; likewise class ``k`` gets entry
  ``k + 1`` of the PASCAL VOC bit-interleaving colour map (the bits of the
  index spread over the high bits of R, G and B), black is kept for
  nothing, and all 256 possible uint8 classes get distinct colours. The
  colours differ from the ``cmap.npy`` of light-weight-refinenet, which is
  not available here.

  Args:
    num_classes: K, at most 256.

  Returns:
    ``(K, 3)`` uint8 RGB; e.g. classes 0, 1, 2 are (128, 0, 0), (0, 128, 0),
    (128, 128, 0).
  """
  if not 0 < num_classes <= 256:
    raise ValueError(f'num_classes must be in 1..256, got {num_classes}')
  index = np.arange(1, num_classes + 1)
  colors = np.zeros((num_classes, 3), np.int64)
  for bit in range(8):
    for channel in range(3):
      colors[:, channel] |= ((index >> (3 * bit + channel)) & 1) << (7 - bit)
  return colors.astype(np.uint8)


def blend(rgb: np.ndarray, color: np.ndarray, alpha: float = 0.5
          ) -> np.ndarray:
  """``floor((1 - alpha) * rgb + alpha * color + 0.5)`` as uint8.

  For ``alpha = 0.5`` this is ``(rgb + color + 1) // 2``.
  """
  mixed = (1 - alpha) * rgb.astype(np.float64) + alpha * color
  return np.floor(mixed + 0.5).astype(np.uint8)


def _listing(directory: pathlib.Path) -> dict[str, pathlib.Path]:
  if not directory.is_dir():
    raise FileNotFoundError(f'{directory}: input folder not found')
  return {p.name: p for p in sorted(directory.iterdir())
          if p.is_file() and not p.name.startswith('.')}


def _unpaired_error(problems: list[str]) -> DataError:
  more = f' (and {len(problems) - 10} more)' if len(problems) > 10 else ''
  return DataError('unpaired input files: ' + '; '.join(problems[:10]) + more)


def examples_from_folder(directory: str | pathlib.Path,
                         modalities: Sequence[str]) -> list[Example]:
  """Pairs ``rgb/<file>`` with ``<modality>/<file>`` for every modality.

  Raises:
    FileNotFoundError: ``rgb/`` or a modality's folder is missing.
    DataError: a file has no partner in another folder (all are named), no
      images, or two RGB files with the same stem (``a.png``, ``a.jpg``).
  """
  directory = pathlib.Path(directory)
  names = ['rgb'] + [m for m in modalities if m != 'rgb']
  listings = {m: _listing(directory / m) for m in names}
  problems = []
  for m in names[1:]:
    problems += [f'{listings["rgb"][f]} has no {directory / m / f}'
                 for f in listings['rgb'] if f not in listings[m]]
    problems += [f'{listings[m][f]} has no {directory / "rgb" / f}'
                 for f in listings[m] if f not in listings['rgb']]
  if problems:
    raise _unpaired_error(problems)
  if not listings['rgb']:
    raise DataError(f'{directory / "rgb"}: no images')
  examples, seen = [], {}
  for f, path in listings['rgb'].items():
    name = path.stem
    if name in seen:
      raise DataError(f'{path} and {seen[name]} would both write {name}.png')
    seen[name] = path
    examples.append(Example(name, {m: listings[m][f] for m in names}))
  return examples


def _parse_line(line: str, where: str, second: str | None
                ) -> dict[str, str]:
  cols = [c.strip() for c in line.rstrip('\r').split('\t')]
  if len(cols) not in (2, 3) or not all(cols):
    raise DataError(f'{where}: expected 2 or 3 tab-separated paths (rgb, '
                    f'[mask,] depth), got {line!r}')
  out = {'rgb': cols[0]}
  if second is not None:
    out[second] = cols[-1]
  return out


def examples_from_list(list_file: str | pathlib.Path,
                       modalities: Sequence[str],
                       root: str | pathlib.Path | None = None
                       ) -> list[Example]:
  """Reads a list file (see the module docstring) and checks the files.

  Raises:
    FileNotFoundError: the list file is missing.
    ValueError: ``modalities`` has more than one non-RGB modality.
    DataError: a malformed line, a listed file that does not exist, or two
      lines with the same output name.
  """
  list_file = pathlib.Path(list_file)
  root = list_file.parent if root is None else pathlib.Path(root)
  others = [m for m in modalities if m != 'rgb']
  if len(others) > 1:
    raise ValueError(f'a list file holds one modality besides RGB, got '
                     f'{tuple(modalities)}; use a folder of sub-folders')
  if not list_file.is_file():
    raise FileNotFoundError(f'{list_file}: list file not found')
  examples, seen = [], {}
  lines = list_file.read_text().splitlines()
  for number, line in enumerate(lines, start=1):
    where = f'{list_file}:{number}'
    rel = _parse_line(line, where, others[0] if others else None)
    paths = {m: root / r for m, r in rel.items()}
    for path in paths.values():
      if not path.is_file():
        raise DataError(f'{path}: listed in {where} but does not exist')
    name = folder.example_name(rel['rgb'])
    if name in seen:
      raise DataError(f'{where}: output name {name!r} already used by '
                      f'{seen[name]}')
    seen[name] = where
    examples.append(Example(name, paths))
  if not examples:
    raise DataError(f'{list_file}: list file is empty')
  return examples


def _read_modality(modality: str, path: pathlib.Path) -> np.ndarray:
  """``(H, W, 3)`` uint8 RGB/HHA or uint16 depth (tiled), as stored."""
  if modality == 'depth':
    return np.repeat(folder.read_depth(path)[..., None], 3, axis=-1)
  return folder.read_rgb(path)


def read_example(example: Example, modalities: Sequence[str], *,
                 crop_to_rgb: bool = False
                 ) -> tuple[np.ndarray, np.ndarray]:
  """Reads and normalises one image's modalities.

  Args:
    example: from :func:`examples_from_folder` / :func:`examples_from_list`.
    modalities: model input order, e.g. ``('rgb', 'depth')``.
    crop_to_rgb: centre-crop inputs larger than the RGB to its size.

  Returns:
    ``(rgb (H, W, 3) uint8, inputs (M, H, W, 3) float32)``.

  Raises:
    DataError: an unreadable file, or a modality whose size differs from
      the RGB's (smaller, or larger without ``crop_to_rgb``).
  """
  rgb_path = example.paths['rgb']
  rgb = folder.read_rgb(rgb_path)
  sample = {}
  for m in modalities:
    x = rgb if m == 'rgb' else _read_modality(m, example.paths[m])
    if x.shape[:2] != rgb.shape[:2]:
      larger = x.shape[0] >= rgb.shape[0] and x.shape[1] >= rgb.shape[1]
      if not (crop_to_rgb and larger):
        raise DataError(
            f'{example.paths[m]}: {m} is {x.shape[0]}x{x.shape[1]} but '
            f'{rgb_path} is {rgb.shape[0]}x{rgb.shape[1]}')
      x = input_pipeline.align_to_mask(x, rgb.shape[:2])
    sample[m] = x
  return rgb, input_pipeline.normalise(sample, modalities)


def _write_png(path: pathlib.Path, image: np.ndarray) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(image).save(path)


def _write_legend(output_dir: pathlib.Path, colors: np.ndarray,
                  class_names: Sequence[str] | None) -> None:
  if class_names is not None and len(class_names) != len(colors):
    raise ValueError(f'{len(class_names)} class names for '
                     f'{len(colors)} classes')
  names = class_names or [str(k) for k in range(len(colors))]
  lines = [f'{k}\t{name}\t#{r:02x}{g:02x}{b:02x}'
           for k, (name, (r, g, b)) in enumerate(zip(names, colors))]
  output_dir.mkdir(parents=True, exist_ok=True)
  (output_dir / 'legend.txt').write_text('\n'.join(lines) + '\n')


def _predict_mask(predict_fn: PredictFn, inputs: np.ndarray,
                  num_classes: int, name: str) -> np.ndarray:
  """``(H, W)`` uint8 argmax of ``predict_fn(inputs[:, None])``."""
  logits = np.asarray(predict_fn(inputs[:, None]))
  want = (1,) + inputs.shape[1:3] + (num_classes,)
  if logits.shape != want:
    raise ValueError(f'{name}: predict_fn returned logits of shape '
                     f'{logits.shape}, expected {want}')
  return np.argmax(logits[0], axis=-1).astype(np.uint8)


def predict_folder(predict_fn: PredictFn, source: str | pathlib.Path,
                   output_dir: str | pathlib.Path, *,
                   modalities: Sequence[str], num_classes: int,
                   class_names: Sequence[str] | None = None,
                   root: str | pathlib.Path | None = None,
                   crop_to_rgb: bool = False, alpha: float = 0.5,
                   progress: bool | None = None) -> list[Prediction]:
  """Segments every image of a folder or list file and writes the masks.

  Args:
    predict_fn: ``fn(inputs (M, 1, H, W, 3) float32) -> (1, H, W, K)``
      full-resolution logits for inputs of any size, e.g.
      ``inference.make_predict_fn(model.apply, variables)``.
    source: a directory (``rgb/``, ``depth/``, ...) or a list file.
    output_dir: where ``mask/``, ``color/``, ``overlay/`` and
      ``legend.txt`` go.
    modalities: model input order, e.g. ``('rgb', 'depth')``.
    num_classes: K.
    class_names: K names for ``legend.txt`` (default: the indices).
    root: base of a list file's relative paths (default: its folder).
    crop_to_rgb: centre-crop inputs larger than the RGB to its size.
    alpha: weight of the colour mask in the overlay.
    progress: show a tqdm bar; None shows it on a terminal only.

  Returns:
    One :class:`Prediction` per image, in input order.

  Raises:
    FileNotFoundError, DataError, ValueError: see the module docstring.
  """
  unknown = [m for m in modalities if m not in input_pipeline.MODALITIES]
  if unknown or not modalities:
    raise ValueError(f'modalities {tuple(modalities)}: give one or more of '
                     f'{input_pipeline.MODALITIES}')
  source, output_dir = pathlib.Path(source), pathlib.Path(output_dir)
  if source.is_dir():
    examples = examples_from_folder(source, modalities)
  else:
    examples = examples_from_list(source, modalities, root)
  colors = palette(num_classes)
  _write_legend(output_dir, colors, class_names)
  written = []
  disable = None if progress is None else not progress
  for example in tqdm.tqdm(examples, desc='predict', unit='image',
                           disable=disable):
    rgb, inputs = read_example(example, modalities, crop_to_rgb=crop_to_rgb)
    mask = _predict_mask(predict_fn, inputs, num_classes, example.name)
    color = colors[mask]
    out = Prediction(example.name,
                     *(output_dir / kind / f'{example.name}.png'
                       for kind in ('mask', 'color', 'overlay')))
    _write_png(out.mask, mask)
    _write_png(out.color, color)
    _write_png(out.overlay, blend(rgb, color, alpha))
    written.append(out)
  return written
