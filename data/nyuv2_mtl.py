"""NYUv2 for multi-task learning, as preprocessed by MTAN and used by LibMTL.

Shikun Liu's MTAN (github.com/lorenmt/mtan) distributes NYUv2 resized to
288x384 with three tasks: 13-class semantic segmentation, depth and surface
normals, 795 train / 654 test images. LibMTL reads the same files. One
``.npy`` array per image and task, channels last (MTAN's loader moves the
channel axis first after ``np.load``)::

  <manual_dir>/train/image/{i}.npy   float32 (H, W, 3), RGB in [0, 1]
  <manual_dir>/train/label/{i}.npy   float (H, W), class 0..12, -1 = ignore
  <manual_dir>/train/depth/{i}.npy   float32 (H, W, 1), 0 = missing
  <manual_dir>/train/normal/{i}.npy  float32 (H, W, 3), unit normals in
                                     [-1, 1], all zero = missing
  <manual_dir>/val/...               the same; becomes the ``test`` split

Files are named ``0.npy`` .. ``N-1.npy`` (``'{:d}.npy'``, as MTAN's loader
formats them); files not ending in ``.npy`` are ignored, as MTAN counts
only the ``*.npy`` ones.

Stored features, sizes unchanged:

* ``image``: float32 (H, W, 3), the file's values exactly;
* ``label``: uint8 (H, W), classes 0..12 as given and -1 mapped to
  ``data.conventions.IGNORE_LABEL`` (255);
* ``depth``: float32 (H, W), the trailing axis of length 1 dropped; 0 stays
  0 (missing);
* ``normal``: float32 (H, W, 3), all zero where missing;
* ``index``: int32, the file number ``i``;
* ``name``: text ``<folder>/<i>``, e.g. ``train/12`` or ``val/3``.

Arrays of another real dtype (e.g. float64) are converted to float32; the
distributed files are float32 and stored bit for bit. ``info.metadata``
holds the class names (NYUv2-13, in the standard order), ``num_classes``,
``ignore_label`` and, under ``missing``, how missing depth and normals are
marked. The depth is not rescaled: it is in the files' own units (about
metres), unlike the uint16 metres x 5000 of the RGB-D segmentation builders.

Every problem with the data stops the build with an error naming the file:
a missing split folder or task folder, a file present for one task but not
another, file names that are not plain integers or leave a gap, an
unreadable ``.npy``, an array of the wrong shape or dtype, tasks of one
image with different sizes, label values other than -1 and 0..12,
non-finite values, or image values outside [0, 1]. The folder listing is
checked before any array is read; each example's arrays are read and checked
as it is generated.
"""

import pathlib
import re

import numpy as np
import tensorflow_datasets as tfds

from data import folder
from data.conventions import IGNORE_LABEL

DataError = folder.DataError

# NYUv2-13 (Couprie et al. 2013), in the standard (MTAN) label order.
CLASS_NAMES = ('bed', 'books', 'ceiling', 'chair', 'floor', 'furniture',
               'objects', 'picture', 'sofa', 'table', 'tv', 'wall', 'window')
NUM_CLASSES = len(CLASS_NAMES)
# Split name -> folder under the manual directory.
SPLIT_DIRS = {'train': 'train', 'test': 'val'}
TASK_DIRS = ('image', 'label', 'depth', 'normal')
# The ignore label in MTAN's label files.
RAW_IGNORE = -1
MISSING = ('depth 0 marks a pixel without depth; a normal of (0, 0, 0) marks '
           'a pixel without a normal')

# Task folder -> (expected shape as text, ndim, channels or None).
_SHAPES = {
    'image': ('(H, W, 3)', 3, 3),
    'label': ('(H, W)', 2, None),
    'depth': ('(H, W, 1)', 3, 1),
    'normal': ('(H, W, 3)', 3, 3),
}
_NAME = re.compile(r'(0|[1-9][0-9]*)\.npy')

_CITATION = """\
@inproceedings{liu2019end,
  title={End-to-End Multi-Task Learning with Attention},
  author={Liu, Shikun and Johns, Edward and Davison, Andrew J},
  booktitle={CVPR}, year={2019}}
@inproceedings{silberman2012indoor,
  title={Indoor Segmentation and Support Inference from RGBD Images},
  author={Silberman, Nathan and Hoiem, Derek and Kohli, Pushmeet and
          Fergus, Rob},
  booktitle={ECCV}, year={2012}}
"""


def _file_numbers(task_dir: pathlib.Path) -> set[int]:
  """The numbers ``i`` of the ``{i}.npy`` files of one task folder.

  Raises:
    DataError: a ``.npy`` name is not a plain integer (naming the file).
  """
  numbers = set()
  for path in sorted(task_dir.iterdir()):
    if path.suffix != '.npy' or not path.is_file():
      continue
    match = _NAME.fullmatch(path.name)
    if not match:
      raise DataError(f'{path}: file name is not a plain integer; files '
                      'must be named 0.npy, 1.npy, ... (MTAN reads '
                      "'{:d}.npy')")
    numbers.add(int(match[1]))
  return numbers


def _check_matching(split_dir: pathlib.Path,
                    numbers: dict[str, set[int]]) -> None:
  """Every file number must exist in every task folder."""
  everything = set().union(*numbers.values())
  for task, present in numbers.items():
    for i in sorted(everything - present):
      other = next(t for t in TASK_DIRS if i in numbers[t])
      raise FileNotFoundError(
          f'{split_dir / task / f"{i}.npy"}: missing, but '
          f'{split_dir / other / f"{i}.npy"} exists; every image needs all '
          f'of {", ".join(TASK_DIRS)}')


def list_split(split_dir: pathlib.Path) -> int:
  """Checks one split folder's files and returns how many images it has.

  Args:
    split_dir: ``<manual_dir>/train`` or ``<manual_dir>/val``.

  Returns:
    N, the files being ``{task}/0.npy`` .. ``{task}/{N-1}.npy`` for every
    task folder.

  Raises:
    FileNotFoundError: the split folder, a task folder or one task's file
      of an image is missing.
    DataError: a file name is not a plain integer, the numbers leave a gap,
      or there are no files.
  """
  if not split_dir.is_dir():
    raise FileNotFoundError(f'{split_dir}: split folder not found; expected '
                            f'{", ".join(f"{t}/" for t in TASK_DIRS)} in it')
  numbers = {}
  for task in TASK_DIRS:
    if not (split_dir / task).is_dir():
      raise FileNotFoundError(f'{split_dir / task}: task folder not found; '
                              'each split needs '
                              f'{", ".join(f"{t}/" for t in TASK_DIRS)}')
    numbers[task] = _file_numbers(split_dir / task)
  _check_matching(split_dir, numbers)
  found = numbers[TASK_DIRS[0]]
  if not found:
    raise DataError(f'{split_dir / TASK_DIRS[0]}: no .npy files')
  count = len(found)
  if max(found) != count - 1:
    gap = min(set(range(count)) - found)
    raise DataError(
        f'{split_dir / TASK_DIRS[0] / f"{gap}.npy"}: missing; files must be '
        f'numbered 0.npy .. N-1.npy without gaps, but there are {count} '
        f'files up to {max(found)}.npy')
  return count


def read_npy(path: pathlib.Path) -> np.ndarray:
  """Reads one array saved with ``np.save`` (no pickles).

  Raises:
    DataError: not a readable ``.npy`` file of one real-valued array.
  """
  try:
    with open(path, 'rb') as f:
      array = np.load(f, allow_pickle=False)
  except (OSError, ValueError, EOFError) as e:
    raise DataError(f'{path}: unreadable .npy file ({e})') from e
  if not isinstance(array, np.ndarray):
    raise DataError(f'{path}: an .npz archive, expected one array saved '
                    'with np.save')
  if not (np.issubdtype(array.dtype, np.floating)
          or np.issubdtype(array.dtype, np.integer)):
    raise DataError(f'{path}: dtype {array.dtype}, expected real numbers '
                    '(float32 as MTAN stores them)')
  return array


def _check_shape(array: np.ndarray, path: pathlib.Path, task: str) -> None:
  text, ndim, channels = _SHAPES[task]
  if array.ndim == ndim and (channels is None or array.shape[-1] == channels):
    return
  hint = ''
  if channels and array.ndim == 3 and array.shape[0] == channels:
    hint = '; it looks channels-first, store channels last'
  raise DataError(f'{path}: {task} must be {text} (channels last, as MTAN '
                  f'stores it), got shape {array.shape}{hint}')


def _finite_float32(array: np.ndarray, path: pathlib.Path) -> np.ndarray:
  """``array`` as float32; NaN or inf (also from the cast) is an error."""
  out = array.astype(np.float32)
  bad = ~np.isfinite(out)
  if bad.any():
    first = tuple(int(i) for i in np.argwhere(bad)[0])
    raise DataError(f'{path}: {int(bad.sum())} non-finite values (NaN or '
                    f'inf as float32), the first at index {first}')
  return out


def convert_label(raw: np.ndarray, path: pathlib.Path) -> np.ndarray:
  """MTAN labels (-1 = ignore, 0..12) -> uint8 0..12 and ``IGNORE_LABEL``.

  Args:
    raw: (H, W) float or integer labels as stored.
    path: the label file, for error messages.

  Returns:
    (H, W) uint8 labels.

  Raises:
    DataError: non-finite values or values other than -1 and 0..12 (the
      message lists them).
  """
  values = _finite_float32(raw, path) if raw.dtype.kind == 'f' else raw
  unique = np.unique(values)
  bad = unique[~np.isin(unique, np.arange(RAW_IGNORE, NUM_CLASSES))]
  if bad.size:
    raise DataError(
        f'{path}: label values {bad[:10].tolist()} are neither '
        f'{RAW_IGNORE} (ignore) nor a class 0..{NUM_CLASSES - 1}')
  values = values.astype(np.int64)
  return np.where(values == RAW_IGNORE, IGNORE_LABEL, values).astype(
      np.uint8)


def _read_task(split_dir: pathlib.Path, task: str, index: int,
               size: tuple[pathlib.Path, tuple[int, ...]] | None
               ) -> np.ndarray:
  """Reads one task's array and checks its shape against the image's."""
  path = split_dir / task / f'{index}.npy'
  array = read_npy(path)
  _check_shape(array, path, task)
  if size is not None and array.shape[:2] != size[1]:
    (h, w), (image_h, image_w) = array.shape[:2], size[1]
    raise DataError(f'{path}: {task} is {h}x{w} but {size[0]} is '
                    f'{image_h}x{image_w}; the tasks of one image must have '
                    'the same size')
  return array


def load_example(split_dir: pathlib.Path, index: int) -> dict[str, object]:
  """Reads, checks and converts the four arrays of image ``index``.

  Args:
    split_dir: the split folder, e.g. ``<manual_dir>/val``.
    index: the file number.

  Returns:
    A TFDS example (see the module docstring).

  Raises:
    DataError: naming the offending file and what is wrong with it.
  """
  image_path = split_dir / 'image' / f'{index}.npy'
  raw_image = _read_task(split_dir, 'image', index, None)
  size = (image_path, raw_image.shape[:2])
  image = _finite_float32(raw_image, image_path)
  if image.size and (image.min() < 0 or image.max() > 1):
    raise DataError(f'{image_path}: image values must lie in [0, 1], got '
                    f'{image.min():g}..{image.max():g}')
  label = convert_label(_read_task(split_dir, 'label', index, size),
                        split_dir / 'label' / f'{index}.npy')
  depth = _finite_float32(_read_task(split_dir, 'depth', index, size),
                          split_dir / 'depth' / f'{index}.npy')
  normal = _finite_float32(_read_task(split_dir, 'normal', index, size),
                           split_dir / 'normal' / f'{index}.npy')
  return {'image': image, 'label': label, 'depth': depth[..., 0],
          'normal': normal, 'index': np.int32(index),
          'name': f'{split_dir.name}/{index}'}


def features() -> tfds.features.FeaturesDict:
  """float32 ``image``, ``depth``, ``normal``; uint8 ``label``; ids."""
  def tensor(shape, dtype):
    return tfds.features.Tensor(shape=shape, dtype=dtype,
                                encoding=tfds.features.Encoding.ZLIB)
  return tfds.features.FeaturesDict({
      'image': tensor((None, None, 3), np.float32),
      'label': tensor((None, None), np.uint8),
      'depth': tensor((None, None), np.float32),
      'normal': tensor((None, None, 3), np.float32),
      'index': tfds.features.Scalar(dtype=np.int32),
      'name': tfds.features.Text(),
  })


class Nyuv2Mtl(tfds.core.GeneratorBasedBuilder):
  """NYUv2 segmentation, depth and normals in the layout of MTAN / LibMTL."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  Nothing is downloaded. Get the preprocessed NYUv2 that MTAN and LibMTL
  distribute (linked from the READMEs of github.com/lorenmt/mtan and
  github.com/median-research-group/LibMTL: 795 train / 654 test images at
  288x384, 13 classes, depth and surface normals as .npy files), unpack it
  and make the manual directory (by default <data_dir>/downloads/manual/,
  or pass manual_dir) hold:

    <manual_dir>/train/image/{i}.npy   float32 (H, W, 3), values in [0, 1]
    <manual_dir>/train/label/{i}.npy   float (H, W), 0..12, -1 = ignore
    <manual_dir>/train/depth/{i}.npy   float32 (H, W, 1), 0 = missing
    <manual_dir>/train/normal/{i}.npy  float32 (H, W, 3), all zero =
                                       missing
    <manual_dir>/val/...               the same; becomes the "test" split

  with files named 0.npy .. N-1.npy in every folder.
  """

  def _info(self) -> tfds.core.DatasetInfo:
    metadata = tfds.core.MetadataDict(
        class_names=list(CLASS_NAMES), num_classes=NUM_CLASSES,
        ignore_label=IGNORE_LABEL, missing=MISSING)
    return tfds.core.DatasetInfo(
        builder=self, features=features(), metadata=metadata,
        description='NYUv2 at 288x384 as preprocessed by MTAN: 13-class '
        'labels (255 = ignore), depth and surface normals, stored as given '
        'in float32.',
        homepage='https://github.com/lorenmt/mtan', citation=_CITATION,
        # Keep file-number order, so eval outputs line up with the files.
        disable_shuffling=True)

  def _split_generators(self, dl_manager):
    # List and check every split before reading any array.
    root = pathlib.Path(dl_manager.manual_dir)
    counts = {split: list_split(root / name)
              for split, name in SPLIT_DIRS.items()}
    return {split: self._generate_examples(root / SPLIT_DIRS[split], count)
            for split, count in counts.items()}

  def _generate_examples(self, split_dir, count):
    for index in range(count):
      yield index, load_example(split_dir, index)
