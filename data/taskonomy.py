"""Taskonomy sample set in the layout of CEN's image-to-image translation.

The official code (``image2image_translation/``, reference §8.1) reads the
Taskonomy sample building (``alexsax/taskonomy-sample-model-1``): one folder
per domain and two list files of path templates::

  <root>/rgb/point_407_view_2_domain_rgb.png
  <root>/reshading/point_407_view_2_domain_reshading.png
  <root>/edge_texture/point_407_view_2_domain_edge_texture.png
  ...
  <root>/train_domain.txt   1000 lines, e.g.
                            {domain}/point_407_view_2_domain_{domain}.png
  <root>/val_domain.txt     500 lines, becomes the ``test`` split

Each line is the literal text ``{domain}`` where the domain name goes; the
official lists have no newline after their last line.

The ten domains, in the order of the official ids (``DOMAINS[i]`` is id i of
the official ``-i`` flag): rgb, normal, reshading, depth_euclidean,
depth_zbuffer, principal_curvature, edge_occlusion, edge_texture,
segment_unsup2d, segment_unsup25d. Every domain folder present in the root is
stored (folders of other Taskonomy domains are ignored), so a download of
only the domains in use works; ``TaskonomyConfig.domains`` can require a
fixed set instead.

Each image goes through the official per-domain preprocessing
(``utils/dataset.py``, ``DatasetFromFolder.__getitem__``) once, at build
time:

1. read with PIL (``np.array(Image.open(path))``): 16-bit grey PNGs give
   their integer values;
2. a single-channel image is repeated to 3 channels;
3. depth domains: ``log(1 + d)``;
4. edge_texture, edge_occlusion, depth_euclidean, depth_zbuffer:
   ``x * 255.0 / max`` with the fixed maxima 11355, 11584, 11.1, 11.1
   (the official minima are all 0);
5. if anything changed, ``astype(uint8)``, which truncates towards zero
   (depth 1000 -> ``int(log(1001) * 255 / 11.1)`` = 158).

Stored features: ``images``, one uint8 (H, W, 3) PNG per stored domain in
the order of ``info.metadata['domains']``, and ``name`` (e.g.
``point_407_view_2``). Sizes are not changed (the sample set is 512x512);
the input pipeline resizes like the official code.

Deviations, each where the official behaviour depends on library versions
or is undefined:

* ``log(1 + d)`` is computed on integers widened first, as in the
  official environment, whose Pillow (< 10.3) opened 16-bit grey PNGs in
  mode 'I' (int32). Pillow >= 10.3 gives uint16, where ``1 + 65535`` wraps
  to 0 and the official code would give ``log(0) = -inf`` for the largest
  (far) depth value.
* Values beyond the fixed maximum (which the maxima are meant to bound) are
  clipped to 255, where the official float-to-uint8 cast is undefined.
* Inputs the official loader would silently corrupt are errors instead:
  a 16-bit image in a domain without a fixed maximum (the cast would wrap
  it modulo 256), an 8-bit image in one with a fixed maximum (it would be
  scaled to 0..5), and images with alpha or 2 channels.

Every problem with the data (a missing domain folder or file, a list line
that is not the template, an unreadable PNG, an image smaller than
``min_size``, domains of one example with different sizes, a repeated
example) stops the build with an error naming the file or line.
"""

import dataclasses
import pathlib
import re
from typing import Callable, Iterator, Mapping, NamedTuple, Sequence

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from data import folder

DataError = folder.DataError


@dataclasses.dataclass(frozen=True)
class Preprocessing:
  """The official per-domain conversion to uint8 (see the module docstring).

  Attributes:
    log: apply ``log(1 + x)`` (the official test ``'depth' in domain``).
    maximum: rescale ``x * 255.0 / maximum``; None keeps the 8-bit values.
  """
  log: bool = False
  maximum: float | None = None


# The official domains in the order of their ids in main.py's domain_dicts.
PREPROCESSING: dict[str, Preprocessing] = {
    'rgb': Preprocessing(),
    'normal': Preprocessing(),
    'reshading': Preprocessing(),
    'depth_euclidean': Preprocessing(log=True, maximum=11.1),
    'depth_zbuffer': Preprocessing(log=True, maximum=11.1),
    'principal_curvature': Preprocessing(),
    'edge_occlusion': Preprocessing(maximum=11584.0),
    'edge_texture': Preprocessing(maximum=11355.0),
    'segment_unsup2d': Preprocessing(),
    'segment_unsup25d': Preprocessing(),
}
DOMAINS = tuple(PREPROCESSING)
SPLIT_LISTS = {'train': 'train_domain.txt', 'test': 'val_domain.txt'}
PLACEHOLDER = '{domain}'
_LINE = re.compile(r'\{domain\}/point_(\d+)_view_(\d+)_domain_\{domain\}\.png')
_EIGHT_BIT_MODES = ('1', 'L', 'P', 'RGB')
_SIXTEEN_BIT_MODES = ('I;16', 'I;16B', 'I;16L', 'I')

_CITATION = """\
@inproceedings{zamir2018taskonomy,
  title={Taskonomy: Disentangling Task Transfer Learning},
  author={Zamir, Amir R and Sax, Alexander and Shen, William B and
          Guibas, Leonidas and Malik, Jitendra and Savarese, Silvio},
  booktitle={CVPR}, year={2018}}
"""


def check_domains(domains: Sequence[str]) -> tuple[str, ...]:
  """Returns ``domains`` as a tuple; an unknown name lists the choices.

  Raises:
    ValueError: a name is not one of ``DOMAINS``, or ``domains`` is one
      string rather than a sequence of names.
  """
  if isinstance(domains, str):
    raise ValueError(f'give a sequence of domain names, got the string '
                     f'{domains!r}')
  for d in domains:
    if d not in PREPROCESSING:
      raise ValueError(f'unknown Taskonomy domain {d!r}; choose from '
                       f'{DOMAINS}')
  return tuple(domains)


class ListEntry(NamedTuple):
  """One list-file line: the template, its example name, where it came from."""
  template: str
  name: str  # "point_<P>_view_<V>".
  source: str  # "<list file>:<line number>", for error messages.

  def path(self, root: pathlib.Path, domain: str) -> pathlib.Path:
    """The file of ``domain``, as the official ``str.replace`` builds it."""
    return root / self.template.replace(PLACEHOLDER, domain)


def read_list(path: pathlib.Path) -> list[ListEntry]:
  """Parses an official ``*_domain.txt`` list of path templates.

  Args:
    path: the list file.

  Returns:
    One entry per line, in file order (a final newline is optional, and a
    Windows ``\\r`` before it is ignored).

  Raises:
    FileNotFoundError: the list file does not exist.
    DataError: the file is empty, a line is not
      ``{domain}/point_<P>_view_<V>_domain_{domain}.png``, or an example
      repeats.
  """
  if not path.is_file():
    raise FileNotFoundError(f'{path}: split list file not found')
  lines = path.read_text().split('\n')
  if lines[-1] == '':
    lines.pop()
  if not lines:
    raise DataError(f'{path}: list file is empty')
  entries, seen = [], {}
  for number, line in enumerate(lines, start=1):
    line = line.rstrip('\r')
    where = f'{path}:{number}'
    match = _LINE.fullmatch(line)
    if not match:
      raise DataError(
          f'{where}: expected a path template like '
          f'"{{domain}}/point_12_view_3_domain_{{domain}}.png" (with the '
          f'literal text {PLACEHOLDER}), got {line!r}')
    name = f'point_{match[1]}_view_{match[2]}'
    if name in seen:
      raise DataError(f'{where}: example {name!r} repeats {seen[name]}')
    seen[name] = where
    entries.append(ListEntry(line, name, where))
  return entries


def _read_png(path: pathlib.Path) -> tuple[str, np.ndarray]:
  """(PIL mode, array) as the official ``np.array(Image.open(path))``."""
  try:
    with Image.open(path) as image:
      return image.mode, np.array(image)
  except (OSError, SyntaxError, ValueError) as e:
    raise DataError(f'{path}: unreadable image ({e})') from e


def preprocess(image: np.ndarray, domain: str) -> np.ndarray:
  """The official per-domain conversion of one decoded image.

  Args:
    image: (H, W) or (H, W, 3) integer array as PIL decodes the file.
    domain: one of ``DOMAINS``.

  Returns:
    (H, W, 3) uint8: grey repeated to 3 channels; for depth ``log(1 + d)``;
    for domains with a fixed maximum ``x * 255.0 / maximum``, truncated
    (values past the maximum clip to 255).

  Raises:
    ValueError: unknown domain, or not (H, W) / (H, W, 3).
  """
  spec = PREPROCESSING[check_domains([domain])[0]]
  x = np.asarray(image)
  if x.ndim == 2:
    x = np.repeat(x[..., None], 3, axis=-1)
  elif x.ndim != 3 or x.shape[-1] != 3:
    raise ValueError(f'expected an (H, W) or (H, W, 3) image, got shape '
                     f'{x.shape}')
  if not (spec.log or spec.maximum):
    return x.astype(np.uint8)
  # The official environment decoded 16-bit PNGs as int32, so 1 + d never
  # wraps; the float64 arithmetic below is the official one, in its order.
  x = x.astype(np.float64)
  if spec.log:
    x = np.log(1.0 + x)
  if spec.maximum:
    x = x * 255.0 / spec.maximum
  return np.clip(x, 0.0, 255.0).astype(np.uint8)


def load_domain(path: pathlib.Path, domain: str) -> np.ndarray:
  """Reads, checks and preprocesses one domain image.

  Args:
    path: the PNG.
    domain: one of ``DOMAINS``.

  Returns:
    (H, W, 3) uint8, see ``preprocess``.

  Raises:
    DataError: unreadable, or a mode the domain cannot have (naming it).
  """
  mode, image = _read_png(path)
  if PREPROCESSING[domain].maximum:
    if mode not in _SIXTEEN_BIT_MODES:
      raise DataError(
          f'{path}: {domain} must be a single-channel 16-bit PNG as in '
          f'Taskonomy, got PIL mode {mode!r} (scaling by 255 / '
          f'{PREPROCESSING[domain].maximum:g} would leave 8-bit values '
          'almost black)')
  elif mode not in _EIGHT_BIT_MODES:
    raise DataError(
        f'{path}: {domain} must be an 8-bit grey, palette or RGB PNG, got '
        f'PIL mode {mode!r} (16-bit values would wrap modulo 256 and alpha '
        'is not an image channel)')
  return preprocess(image, domain)


def present_domains(root: pathlib.Path,
                    required: Sequence[str] | None = None) -> tuple[str, ...]:
  """The domains to store: folders of ``root`` named like official domains.

  Args:
    root: the manual directory.
    required: store exactly these (official order), or None for every
      official domain folder present.

  Returns:
    Domain names in the order of ``DOMAINS``.

  Raises:
    FileNotFoundError: a required domain folder is missing, or there is no
      domain folder at all (the messages name the folders).
    ValueError: ``required`` names an unknown domain.
  """
  if required is not None:
    required = check_domains(required)
    if not required:
      raise ValueError(f'give at least one domain from {DOMAINS}')
    for d in required:
      if not (root / d).is_dir():
        raise FileNotFoundError(f'{root / d}: domain folder not found')
    return tuple(d for d in DOMAINS if d in required)
  found = tuple(d for d in DOMAINS if (root / d).is_dir())
  if not found:
    raise FileNotFoundError(
        f'{root}: no domain folder; expected one or more of {DOMAINS}')
  return found


def load_example(root: pathlib.Path, entry: ListEntry,
                 domains: Sequence[str], min_size: int) -> dict[str, object]:
  """Reads every stored domain of one list entry.

  Args:
    root: the manual directory.
    entry: one list line.
    domains: the stored domains, in storage order.
    min_size: the smallest allowed height and width.

  Returns:
    A TFDS example: ``images`` (PNG bytes, one per domain) and ``name``.

  Raises:
    FileNotFoundError, DataError: naming the offending file.
  """
  images, first = [], None
  for domain in domains:
    path = entry.path(root, domain)
    if not path.is_file():
      raise FileNotFoundError(f'{path}: file of {entry.source} does not '
                              'exist')
    image = load_domain(path, domain)
    h, w = image.shape[:2]
    if min(h, w) < min_size:
      raise DataError(f'{path}: image is {h}x{w}, smaller than the minimum '
                      f'{min_size} (TaskonomyConfig.min_size)')
    if first is None:
      first = (path, image.shape[:2])
    elif image.shape[:2] != first[1]:
      raise DataError(f'{path}: image is {h}x{w} but {first[0]} is '
                      f'{first[1][0]}x{first[1][1]}; the domains of one '
                      'example must have the same size')
    images.append(folder.encode_png(image))
  return {'images': images, 'name': entry.name}


@dataclasses.dataclass(eq=False)
class TaskonomyConfig(tfds.core.BuilderConfig):
  """How to read an official-layout Taskonomy folder.

  Attributes:
    domains: the domains to store (each folder must exist); None stores
      every official domain folder present.
    min_size: smallest allowed image height and width (the official
      pipeline crops 256).
    split_lists: split name -> list file, relative to the manual directory.
  """
  domains: tuple[str, ...] | None = None
  min_size: int = 256
  split_lists: Mapping[str, str] = dataclasses.field(
      default_factory=lambda: dict(SPLIT_LISTS))


def features() -> tfds.features.FeaturesDict:
  """``images``: uint8 (H, W, 3) PNGs, one per stored domain; ``name``."""
  return tfds.features.FeaturesDict({
      'images': tfds.features.Sequence(
          tfds.features.Image(shape=(None, None, 3), dtype=np.uint8)),
      'name': tfds.features.Text(),
  })


def dataset_info(builder: tfds.core.DatasetBuilder, *, description: str,
                 homepage: str = '', citation: str = ''
                 ) -> tfds.core.DatasetInfo:
  """DatasetInfo; ``split_generators`` adds ``metadata['domains']``."""
  return tfds.core.DatasetInfo(
      builder=builder, description=description, features=features(),
      homepage=homepage, citation=citation,
      metadata=tfds.core.MetadataDict(),
      # Keep list-file order, so eval outputs line up with the list.
      disable_shuffling=True)


def split_generators(root: pathlib.Path, config: TaskonomyConfig,
                     info: tfds.core.DatasetInfo,
                     generate: Callable[..., Iterator]
                     ) -> dict[str, Iterator]:
  """Checks lists and domain folders first, so bad input fails before work.

  Args:
    root: the manual directory.
    config: the builder config.
    info: the builder's info; ``metadata['domains']`` is set here.
    generate: the builder's ``_generate_examples(root, entries, domains)``.

  Returns:
    split name -> example generator, as ``_split_generators`` returns.
  """
  root = pathlib.Path(root)
  entries = {split: read_list(root / name)
             for split, name in config.split_lists.items()}
  domains = present_domains(root, config.domains)
  info.metadata['domains'] = list(domains)
  return {split: generate(root, split_entries, domains)
          for split, split_entries in entries.items()}


def generate_examples(root: pathlib.Path, entries: Sequence[ListEntry],
                      domains: Sequence[str], min_size: int
                      ) -> Iterator[tuple[str, dict[str, object]]]:
  """Yields ``(name, example)`` per list entry, in list order."""
  for entry in entries:
    yield entry.name, load_example(root, entry, domains, min_size)


class Taskonomy(tfds.core.GeneratorBasedBuilder):
  """Taskonomy domains in the layout of CEN's image translation code."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = [
      TaskonomyConfig(name='default',
                      description='Every official domain folder present.'),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  Clone the Taskonomy sample building (git clone
  https://github.com/alexsax/taskonomy-sample-model-1, about 25 GB; the
  domain folders you do not use may be deleted) and copy the official list
  files image2image_translation/data/train_domain.txt and val_domain.txt
  from github.com/yikaiw/CEN into it, so that the manual directory (by
  default <data_dir>/downloads/manual/, or pass manual_dir) holds:

    <manual_dir>/rgb/point_407_view_2_domain_rgb.png  (one folder per
    <manual_dir>/reshading/...                         domain)
    <manual_dir>/train_domain.txt  1000 lines like
        {domain}/point_407_view_2_domain_{domain}.png
    <manual_dir>/val_domain.txt    500 lines, becomes the "test" split
  """

  def _info(self) -> tfds.core.DatasetInfo:
    return dataset_info(
        self, description='Taskonomy sample building (Cauthron) with the '
        "official CEN per-domain preprocessing; metadata['domains'] names "
        'the stored domains in the order of the images feature.',
        homepage='http://taskonomy.stanford.edu', citation=_CITATION)

  def _split_generators(self, dl_manager):
    return split_generators(dl_manager.manual_dir, self.builder_config,
                            self.info, self._generate_examples)

  def _generate_examples(self, root, entries, domains):
    yield from generate_examples(root, entries, domains,
                                 self.builder_config.min_size)
