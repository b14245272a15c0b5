"""Aligned RGB-D folders in the official CEN layout, and the generic builder.

The layout (CEN's NYUDv2 release, reference §5.1) is a root directory with
the images in sub-folders and one list file per split::

  <root>/rgb/000003.png      RGB, 8-bit 3-channel (any PIL-readable file)
  <root>/depth/000003.png    depth, 16-bit single-channel PNG
  <root>/masks/000003.png    labels, 8-bit grey or palette PNG (indices)
  <root>/train.txt           one example per line
  <root>/val.txt

Each list line holds three tab-separated paths relative to the root, in the
official column order ``rgb <TAB> mask <TAB> depth``; the last line may lack
its newline. Folder names other than ``rgb/``, ``depth/``, ``masks/`` work
too, since only the list paths are used.

Conventions shared by every builder in ``data/``:

* depth is stored as is, uint16 metres x 5000 (0 = missing); the pipeline
  multiplies by 1/5000;
* labels are uint8, 0..K-1 for the K classes and 255 for ignore;
* RGB and depth may be larger than the mask: the input pipeline centre-crops
  them to the mask size (the official ``CropAlignToMask``), so they are
  stored uncropped; one smaller than the mask is an error;
* the optional ``hha`` feature is computed once at build time from the
  stored (uncropped) depth with ``data.hha`` and is cropped in the
  pipeline like the depth;
* the optional ``normal`` feature (for the multitask task's surface
  normals) is likewise fitted once at build time to the stored depth with
  ``data.normals`` and stored as float16 (H, W, 3), all zero where the
  depth gives no plane; float16 keeps each component to 5e-4, i.e. the
  direction to about 0.05 degrees.

Every problem with the data (a missing or unreadable file, a malformed list
line, misaligned shapes, out-of-range labels) stops the build with an error
that names the file; nothing is skipped.

The generic builder ``rgbd_folder`` is for a user's own data: give the class
names (and hence K) in an ``RgbdFolderConfig``::

  config = RgbdFolderConfig(name='my_rooms', class_names=('floor', 'wall'))
  data.prepare('rgbd_folder', config=config, data_dir=..., manual_dir=root)
  # later: tfds.data_source('rgbd_folder/my_rooms', data_dir=...)
"""

import dataclasses
import pathlib
from typing import Callable, Iterator, Mapping, NamedTuple

import cv2
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from data import hha as hha_lib
from data import normals as normals_lib
from data.conventions import DEPTH_SCALE
from data.conventions import IGNORE_LABEL
# SUN RGB-D toolbox depth is clipped at 8 m when read.
_SUNRGBD_MAX_DEPTH_M = 8.0


class DataError(ValueError):
  """A data file or list file is malformed; the message names the file."""


class ListEntry(NamedTuple):
  """One list-file line: paths relative to the root, and where it came from."""
  rgb: str
  mask: str
  depth: str
  source: str  # "<list file>:<line number>", for error messages.


def read_list(path: pathlib.Path) -> list[ListEntry]:
  """Parses a tab-separated ``rgb mask depth`` list file.

  Args:
    path: the list file.

  Returns:
    One entry per line, in file order.

  Raises:
    FileNotFoundError: the list file does not exist.
    DataError: the file is empty, or a line is empty or does not have
      exactly three non-empty tab-separated columns.
  """
  if not path.is_file():
    raise FileNotFoundError(f'{path}: split list file not found')
  lines = path.read_text().split('\n')
  if lines[-1] == '':  # A final newline is optional.
    lines.pop()
  if not lines:
    raise DataError(f'{path}: list file is empty')
  entries = []
  for number, line in enumerate(lines, start=1):
    line = line.rstrip('\r')
    where = f'{path}:{number}'
    if not line.strip():
      raise DataError(f'{where}: empty line')
    cols = line.split('\t')
    if len(cols) != 3 or any(not c.strip() for c in cols):
      raise DataError(
          f'{where}: expected 3 tab-separated paths (rgb, mask, depth), got '
          f'{line!r}')
    rgb, mask, depth = (c.strip() for c in cols)
    entries.append(ListEntry(rgb, mask, depth, where))
  return entries


def _read_pil(path: pathlib.Path) -> tuple[str, np.ndarray]:
  """(PIL mode, array) of an image; palette images give their indices."""
  try:
    with Image.open(path) as image:
      return image.mode, np.asarray(image)
  except (OSError, SyntaxError, ValueError) as e:
    raise DataError(f'{path}: unreadable image ({e})') from e


def read_rgb(path: pathlib.Path) -> np.ndarray:
  """Reads an 8-bit RGB image.

  Args:
    path: image file.

  Returns:
    (H, W, 3) uint8.

  Raises:
    DataError: unreadable, or not an RGB image.
  """
  mode, rgb = _read_pil(path)
  if mode != 'RGB':
    raise DataError(f"{path}: RGB image has PIL mode {mode!r}, expected 'RGB'")
  return rgb.astype(np.uint8, copy=False)


def read_depth(path: pathlib.Path) -> np.ndarray:
  """Reads a 16-bit depth PNG as stored (OpenCV, ``IMREAD_UNCHANGED``).

  Args:
    path: image file.

  Returns:
    (H, W) uint16.

  Raises:
    DataError: unreadable, or not single-channel 16-bit.
  """
  depth = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
  if depth is None:
    raise DataError(f'{path}: unreadable depth image')
  if depth.dtype != np.uint16 or depth.ndim != 2:
    raise DataError(
        f'{path}: depth must be a single-channel 16-bit image (metres x '
        f'5000), got dtype {depth.dtype} and shape {depth.shape}')
  return depth


def read_label(path: pathlib.Path) -> np.ndarray:
  """Reads an 8-bit label image as indices (palette PNGs are not coloured).

  Args:
    path: image file.

  Returns:
    (H, W) uint8 raw label values.

  Raises:
    DataError: unreadable, or not a grey ('L') or palette ('P') image.
  """
  mode, label = _read_pil(path)
  if mode not in ('L', 'P'):
    raise DataError(f'{path}: label image has PIL mode {mode!r}, expected '
                    "single-channel indices ('L' or 'P')")
  return label.astype(np.uint8, copy=False)


def _check_cen_labels(labels: np.ndarray, num_classes: int,
                      path: pathlib.Path) -> np.ndarray:
  bad = (labels >= num_classes) & (labels != IGNORE_LABEL)
  if bad.any():
    raise DataError(
        f'{path}: label values {np.unique(labels[bad]).tolist()} are '
        f'outside 0..{num_classes - 1} and {IGNORE_LABEL}')
  return labels


def from_void_zero(values: np.ndarray, num_classes: int) -> np.ndarray:
  """Converts 0 = void, 1..K labels to the CEN convention 0..K-1, 255.

  This is the "nyuv2-meta-data" / SUN RGB-D toolbox convention:
  ``y = v - 1; y[v == 0] = 255``.

  Args:
    values: (H, W) integer labels, 0 = void, 1..K = classes.
    num_classes: K.

  Returns:
    (H, W) uint8 labels, 0..K-1 for classes and 255 for void.

  Raises:
    ValueError: a value is larger than K.
  """
  values = np.asarray(values)
  if values.size and (values.min() < 0 or values.max() > num_classes):
    raise ValueError(f'labels must lie in 0..{num_classes} (0 = void), got '
                     f'{values.min()}..{values.max()}')
  out = (values.astype(np.int64) - 1).astype(np.uint8)
  out[values == 0] = IGNORE_LABEL
  return out


def _void_zero_labels(labels: np.ndarray, num_classes: int,
                      path: pathlib.Path) -> np.ndarray:
  try:
    return from_void_zero(labels, num_classes)
  except ValueError as e:
    raise DataError(f'{path}: {e}') from e


# How the stored label PNGs encode classes.
LABEL_CONVENTIONS: dict[str, Callable[..., np.ndarray]] = {
    'cen': _check_cen_labels,  # 0..K-1, 255 = ignore (CEN's NYUDv2 masks).
    'void0': _void_zero_labels,  # 0 = void, 1..K (nyuv2-meta-data, SUN).
}


def sunrgbd_depth_to_m5000(raw: np.ndarray) -> np.ndarray:
  """SUN RGB-D toolbox depth PNG -> uint16 metres x 5000.

  The toolbox stores millimetres rotated by 3 bits
  (``mm = (d >> 3) | (d << 13)``) and clips at 8 m when reading.

  Args:
    raw: (H, W) uint16 as stored in the toolbox's ``depth_bfx/`` or
      ``depth/`` PNGs.

  Returns:
    (H, W) uint16 depth in metres x 5000, 0 = missing.
  """
  raw = np.asarray(raw, np.uint16)
  mm = (raw >> np.uint16(3)) | (raw << np.uint16(13))
  metres = np.minimum(mm.astype(np.float64) / 1000.0, _SUNRGBD_MAX_DEPTH_M)
  return np.round(metres * DEPTH_SCALE).astype(np.uint16)


# How the stored depth PNGs encode depth; converted to metres x 5000.
DEPTH_ENCODINGS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    'm5000': lambda depth: depth,  # NYUDv2 (CEN release): stored as is.
    'sunrgbd': sunrgbd_depth_to_m5000,
}


def _choose(table: Mapping[str, object], key: str, what: str):
  if key not in table:
    raise ValueError(f'unknown {what} {key!r}; choose one of {sorted(table)}')
  return table[key]


def nyu_camera_matrix(depth_shape: tuple[int, int],
                      path: pathlib.Path) -> np.ndarray:
  """NYU Kinect intrinsics for a full 480x640 or a 468x625 CEN-cropped depth.

  Args:
    depth_shape: (H, W) of the stored depth.
    path: the depth file, for the error message.

  Returns:
    (3, 3) intrinsics.

  Raises:
    DataError: any other size (the crop, hence intrinsics, are unknown).
  """
  if tuple(depth_shape) == (480, 640):
    return hha_lib.NYU_KINECT_K
  if tuple(depth_shape) == (468, 625):
    return hha_lib.crop_camera_matrix(hha_lib.NYU_KINECT_K,
                                      *hha_lib.NYU_CROP_OFFSET)
  raise DataError(f'{path}: depth is {depth_shape[0]}x{depth_shape[1]}; NYU '
                  'intrinsics are known only for 480x640 and the 468x625 '
                  'crop, give a camera matrix to compute HHA or normals')


@dataclasses.dataclass(frozen=True)
class Layout:
  """What a builder needs to know to read and check one folder layout.

  Attributes:
    class_names: K class names in label order.
    split_lists: split name -> list file, relative to the root.
    hha: whether to compute the ``hha`` feature.
    normals: whether to compute the ``normal`` feature.
    camera_matrix: function ``(depth_shape, depth_path) -> (3, 3)`` giving
      the intrinsics for HHA and normals; only called when one of them is
      computed.
    label_convention: key of ``LABEL_CONVENTIONS``.
    depth_encoding: key of ``DEPTH_ENCODINGS``.
  """
  class_names: tuple[str, ...]
  split_lists: Mapping[str, str] = dataclasses.field(default_factory=dict)
  hha: bool = False
  normals: bool = False
  camera_matrix: Callable[[tuple[int, int], pathlib.Path], np.ndarray] = (
      nyu_camera_matrix)
  label_convention: str = 'cen'
  depth_encoding: str = 'm5000'

  def __post_init__(self):
    _choose(LABEL_CONVENTIONS, self.label_convention, 'label convention')
    _choose(DEPTH_ENCODINGS, self.depth_encoding, 'depth encoding')
    if not self.class_names:
      raise ValueError('a layout needs at least one class name')
    if len(self.class_names) >= IGNORE_LABEL:
      raise ValueError(f'at most {IGNORE_LABEL} classes fit in uint8 labels '
                       f'with {IGNORE_LABEL} = ignore')


def fixed_camera_matrix(matrix) -> Callable[..., np.ndarray]:
  """A ``Layout.camera_matrix`` that returns ``matrix`` for every image."""
  k = np.asarray(matrix, np.float64).reshape(3, 3)
  return lambda shape, path: k


def features(with_hha: bool,
             with_normals: bool = False) -> tfds.features.FeaturesDict:
  """The TFDS features of every RGB-D segmentation builder here.

  Args:
    with_hha: add the ``hha`` feature.
    with_normals: add the ``normal`` feature.

  Returns:
    ``rgb`` uint8 (H, W, 3) PNG, ``depth`` uint16 (H, W) as stored,
    ``label`` uint8 (H, W), ``name`` text, optionally ``hha`` uint8
    (H, W, 3) PNG and ``normal`` float16 (H, W, 3).
  """
  spec = {
      'rgb': tfds.features.Image(shape=(None, None, 3), dtype=np.uint8),
      'depth': tfds.features.Tensor(shape=(None, None), dtype=np.uint16,
                                    encoding=tfds.features.Encoding.ZLIB),
      'label': tfds.features.Tensor(shape=(None, None), dtype=np.uint8,
                                    encoding=tfds.features.Encoding.ZLIB),
      'name': tfds.features.Text(),
  }
  if with_hha:
    spec['hha'] = tfds.features.Image(shape=(None, None, 3), dtype=np.uint8)
  if with_normals:
    spec['normal'] = tfds.features.Tensor(
        shape=(None, None, 3), dtype=np.float16,
        encoding=tfds.features.Encoding.ZLIB)
  return tfds.features.FeaturesDict(spec)


def dataset_info(builder: tfds.core.DatasetBuilder, layout: Layout, *,
                 description: str, homepage: str = '',
                 citation: str = '') -> tfds.core.DatasetInfo:
  """DatasetInfo with the class names, K and conventions as metadata."""
  metadata = tfds.core.MetadataDict(
      class_names=list(layout.class_names),
      num_classes=len(layout.class_names),
      ignore_label=IGNORE_LABEL,
      depth_scale=DEPTH_SCALE,
  )
  return tfds.core.DatasetInfo(
      builder=builder, description=description,
      features=features(layout.hha, layout.normals),
      homepage=homepage, citation=citation, metadata=metadata,
      # Keep list-file order, so eval outputs line up with the list.
      disable_shuffling=True)


def encode_png(image: np.ndarray) -> bytes:
  """PNG bytes of a uint8 (H, W, 3) RGB or (H, W) image, via OpenCV."""
  if image.ndim == 3:
    image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
  ok, buf = cv2.imencode('.png', image)
  if not ok:
    raise RuntimeError(f'PNG encoding failed for an array of {image.shape}')
  return buf.tobytes()


def example_name(rgb_path: str) -> str:
  """``rgb/000003.png`` -> ``000003``: the RGB path less folder and suffix."""
  parts = pathlib.PurePosixPath(rgb_path).parts
  rest = pathlib.PurePosixPath(*(parts[1:] if len(parts) > 1 else parts))
  return str(rest.with_suffix(''))


def _existing(root: pathlib.Path, rel: str, entry: ListEntry) -> pathlib.Path:
  path = root / rel
  if not path.is_file():
    raise FileNotFoundError(f'{path}: file listed in {entry.source} does not '
                            'exist')
  return path


def _check_not_smaller(array: np.ndarray, path: pathlib.Path, what: str,
                       mask_shape: tuple[int, int],
                       mask_path: pathlib.Path) -> None:
  h, w = array.shape[:2]
  if h < mask_shape[0] or w < mask_shape[1]:
    raise DataError(
        f'{path}: {what} is {h}x{w}, smaller than the mask {mask_path} '
        f'({mask_shape[0]}x{mask_shape[1]}); RGB and depth are centre-'
        'cropped to the mask and must be at least as large')


def load_example(root: pathlib.Path, entry: ListEntry,
                 layout: Layout) -> dict[str, object]:
  """Reads, converts and checks one list entry.

  Args:
    root: the layout's root directory.
    entry: one list line.
    layout: conventions of this layout.

  Returns:
    A TFDS example dict (``rgb`` and ``hha`` as PNG bytes, ``normal``
    float16).

  Raises:
    FileNotFoundError, DataError: naming the offending file.
  """
  rgb_path = _existing(root, entry.rgb, entry)
  mask_path = _existing(root, entry.mask, entry)
  depth_path = _existing(root, entry.depth, entry)
  check = _choose(LABEL_CONVENTIONS, layout.label_convention,
                  'label convention')
  label = check(read_label(mask_path), len(layout.class_names), mask_path)
  rgb = read_rgb(rgb_path)
  depth = DEPTH_ENCODINGS[layout.depth_encoding](read_depth(depth_path))
  _check_not_smaller(rgb, rgb_path, 'RGB', label.shape, mask_path)
  _check_not_smaller(depth, depth_path, 'depth', label.shape, mask_path)
  example = {'rgb': encode_png(rgb), 'depth': depth, 'label': label,
             'name': example_name(entry.rgb)}
  if layout.hha or layout.normals:
    k = layout.camera_matrix(depth.shape, depth_path)
  if layout.hha:
    example['hha'] = encode_png(
        hha_lib.depth_to_hha(depth / DEPTH_SCALE, k))
  if layout.normals:
    example['normal'] = normals_lib.normals_from_depth(
        depth / DEPTH_SCALE, k).astype(np.float16)
  return example


def split_generators(root: pathlib.Path, layout: Layout,
                     generate: Callable[..., Iterator]) -> dict[str, Iterator]:
  """Reads every split list first, so a bad list fails before any work.

  Args:
    root: the manual directory.
    layout: conventions of this layout.
    generate: the builder's ``_generate_examples(root, entries)``.

  Returns:
    split name -> example generator, as ``_split_generators`` returns.
  """
  root = pathlib.Path(root)
  entries = {split: read_list(root / name)
             for split, name in layout.split_lists.items()}
  return {split: generate(root, split_entries)
          for split, split_entries in entries.items()}


def generate_examples(root: pathlib.Path, entries: list[ListEntry],
                      layout: Layout) -> Iterator[tuple[str, dict]]:
  """Yields ``(name, example)``; a repeated name is an error."""
  seen = {}
  for entry in entries:
    name = example_name(entry.rgb)
    if name in seen:
      raise DataError(f'{entry.source}: example {name!r} repeats '
                      f'{seen[name]}')
    seen[name] = entry.source
    yield name, load_example(root, entry, layout)


@dataclasses.dataclass(eq=False)
class RgbdFolderConfig(tfds.core.BuilderConfig):
  """A user's aligned RGB-D folder (see the module docstring).

  Attributes:
    class_names: the K class names in label order (required).
    split_lists: split name -> list file relative to the manual directory.
    hha: compute the ``hha`` feature at build time.
    normals: compute the ``normal`` feature (``data.normals``) at build
      time.
    camera_matrix: 9 numbers (row-major 3x3 intrinsics, 1-based pixel
      convention) for HHA and normals; None means the NYU Kinect camera (480x640 or the
      468x625 crop).
    label_convention: 'cen' (0..K-1, 255 ignore) or 'void0' (0 void,
      1..K classes).
    depth_encoding: 'm5000' (uint16 metres x 5000) or 'sunrgbd' (SUN RGB-D
      toolbox encoding).
  """
  class_names: tuple[str, ...] = ()
  split_lists: Mapping[str, str] = dataclasses.field(
      default_factory=lambda: {'train': 'train.txt', 'test': 'val.txt'})
  hha: bool = False
  normals: bool = False
  camera_matrix: tuple[float, ...] | None = None
  label_convention: str = 'cen'
  depth_encoding: str = 'm5000'

  def layout(self) -> Layout:
    camera = (fixed_camera_matrix(self.camera_matrix)
              if self.camera_matrix is not None else nyu_camera_matrix)
    return Layout(class_names=tuple(self.class_names),
                  split_lists=dict(self.split_lists), hha=self.hha,
                  normals=self.normals, camera_matrix=camera,
                  label_convention=self.label_convention,
                  depth_encoding=self.depth_encoding)


class RgbdFolder(tfds.core.GeneratorBasedBuilder):
  """A user's own aligned RGB-D segmentation data in the CEN layout."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  Put your data in the manual directory in the CEN layout: rgb/, depth/
  (uint16 PNG, metres x 5000 unless depth_encoding says otherwise), masks/
  (8-bit label PNGs) and one list file per split (by default train.txt and
  val.txt) whose lines are "rgb<TAB>mask<TAB>depth" paths relative to the
  manual directory. Pass config=RgbdFolderConfig(name=..., class_names=...).
  """

  def _layout(self) -> Layout:
    if not isinstance(self.builder_config, RgbdFolderConfig):
      raise ValueError('rgbd_folder needs config=RgbdFolderConfig(name=..., '
                       'class_names=(...)) giving the classes')
    return self.builder_config.layout()

  def _info(self) -> tfds.core.DatasetInfo:
    return dataset_info(self, self._layout(),
                        description='A user-supplied aligned RGB-D '
                        'segmentation dataset in the CEN folder layout.')

  def _split_generators(self, dl_manager):
    return split_generators(dl_manager.manual_dir, self._layout(),
                            self._generate_examples)

  def _generate_examples(self, root, entries):
    yield from generate_examples(root, entries, self._layout())
