"""Grain input pipeline for image-to-image translation, as the official code.

Examples are read with ``tfds.data_source`` from the ``taskonomy`` and
``synthetic_taskonomy`` builders in ``data/`` (one uint8 (H, W, 3) image per
stored domain, already through the official per-domain preprocessing) and
fed by ``grain``; no TensorFlow is involved.

Training transforms, in the official order (reference §8.1,
``utils/dataset.py`` and ``main.py``), the same for every domain of an
example:

1. PIL bilinear resize to ``load_size`` x ``load_size`` (official
   ``resize_scale``, 286);
2. crop ``crop_size`` (256) at ``left = randint(0, load - crop + 1)``, then
   ``top`` the same way. Python's ``randint`` includes both ends, so the
   offset can be ``load - crop + 1`` and the window then runs one pixel
   past the image; PIL's ``crop`` fills that last column (or row) with
   zeros, i.e. -1 after normalising. Reproduced as is;
3. horizontal flip with probability 0.5 (``random() < 0.5``);
4. the official ``Resize(256)``, a no-op after a 256 crop (not applied
   here: ``crop_size`` is the output size);
5. ``ToTensor`` and ``Normalize(0.5, 0.5)``: ``(x / 255 - 0.5) / 0.5`` in
   float32, so values lie in [-1, 1].

The three draws (left, top, flip) come from grain's per-record generator,
in that order. Evaluation: the official ``Resize(256)``, which brings the
shorter side to 256 (the whole image for square images) with PIL bilinear,
then step 5.

Batches are dicts of NumPy arrays:

* ``'inputs'``: float32 ``(B, M, S, S, 3)``, the M input domains in the
  order of ``inputs``;
* ``'target'``: float32 ``(B, S, S, 3)``; with several target domains
  (multitask translation, ``target`` a sequence), ``(B, T, S, S, 3)`` in
  the order given;
* ``'valid'``: bool ``(B,)``, False only for the padding examples that fill
  the last eval batch(es) (their images are 0);
* ``'index'``: int32 ``(B,)``, eval batches only: the example's position in
  the split (it seeds the example's dropout in the official protocol).

Deviation: training batches run across epoch boundaries (an endless
shuffled stream, reshuffled every epoch), where the official loader ends
each epoch with a partial batch (of size 0 at the official batch size 1).
"""

import pathlib
from typing import Any, Sequence, Union

import grain
import numpy as np
from PIL import Image

from cen_jax.training import loaders
import data
from data import taskonomy

# One target domain, or a sequence of them (multitask translation).
Target = Union[str, Sequence[str]]

# Datasets ``get_source`` generates when they are missing.
_GENERATED = ('synthetic_taskonomy',)


def get_source(name: str, split: str, *, data_dir: str | pathlib.Path):
  """A random-access source over a prepared dataset split.

  ``synthetic_taskonomy`` is generated into ``data_dir`` first if missing;
  ``taskonomy`` must have been built with ``data.prepare``.

  Args:
    name: dataset name with optional config, e.g. ``'taskonomy'``,
      ``'synthetic_taskonomy/tiny'``.
    split: ``'train'`` or ``'test'``.
    data_dir: the TFDS data directory.

  Returns:
    A ``tfds`` array_record data source; ``dataset_info.metadata['domains']``
    names its images.

  Raises:
    FileNotFoundError: the dataset is not prepared in ``data_dir``.
  """
  if name.partition('/')[0] in _GENERATED:
    data.prepare(name, data_dir=data_dir)
  return loaders.prepared_source(name, split, data_dir=data_dir)


def domains(source) -> tuple[str, ...]:
  """The domains stored with a source's dataset, in storage order.

  Raises:
    ValueError: the dataset is not a translation dataset.
  """
  info = source.dataset_info
  if 'domains' not in (info.metadata or {}):
    raise ValueError(f'{info.full_name} records no domains; translation '
                     'reads taskonomy or synthetic_taskonomy')
  return tuple(info.metadata['domains'])


def target_tuple(target: Target) -> tuple[str, ...]:
  """``'rgb'`` -> ``('rgb',)``; a sequence of targets as a tuple."""
  return (target,) if isinstance(target, str) else tuple(target)


def check_names(inputs: Sequence[str],
                target: Target) -> tuple[tuple[str, ...], Target]:
  """Checks ``inputs -> target`` without reading data.

  Args:
    inputs: input domain names.
    target: a target domain name, or a sequence of them (multitask).

  Returns:
    ``(inputs, target)`` with ``inputs`` (and a sequence ``target``) a
    tuple.

  Raises:
    ValueError: an unknown domain name (listing the official ones), no
      input, no target, a repeated target, or a target among the inputs.
  """
  inputs = taskonomy.check_domains(inputs)
  targets = taskonomy.check_domains(target_tuple(target))
  if not inputs:
    raise ValueError(f'give at least one input domain from '
                     f'{taskonomy.DOMAINS}')
  if not targets:
    raise ValueError(f'give at least one target domain from '
                     f'{taskonomy.DOMAINS}')
  if len(set(targets)) < len(targets):
    raise ValueError(f'targets {targets} name a domain twice')
  for t in targets:
    if t in inputs:
      raise ValueError(f'target {t!r} is also an input {inputs}')
  return inputs, (target if isinstance(target, str) else targets)


def check_domains(source, inputs: Sequence[str],
                  target: Target) -> tuple[tuple[str, ...], Target]:
  """Checks that ``inputs -> target`` is a translation the source can feed.

  Args:
    source: a source from ``get_source``.
    inputs: input domain names, at least one.
    target: the target domain name, not among ``inputs``, or a sequence
      of them.

  Returns:
    ``(inputs, target)`` as ``check_names``.

  Raises:
    ValueError: as ``check_names``, or a domain the dataset does not store
      (naming the dataset's domains).
  """
  inputs, target = check_names(inputs, target)
  stored = domains(source)
  for d in inputs + target_tuple(target):
    if d not in stored:
      raise ValueError(f'{source.dataset_info.full_name} has no domain '
                       f'{d!r}; it stores {stored}')
  return inputs, target


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """PIL bilinear resize of a uint8 (H, W, 3) image, as the official code."""
  if image.shape[:2] == (height, width):
    return image
  pil = Image.fromarray(image).resize((width, height),
                                      Image.Resampling.BILINEAR)
  return np.asarray(pil)


def eval_size(height: int, width: int, size: int) -> tuple[int, int]:
  """torchvision's ``Resize(size)``: the shorter side becomes ``size``.

  Returns:
    ``(height, width)``; ``(size, size)`` for square images. The longer
    side is ``int(size * long / short)``, truncated as torchvision does.
  """
  if width <= height:
    return int(size * height / width), size
  return size, int(size * width / height)


def crop(image: np.ndarray, top: int, left: int, size: int) -> np.ndarray:
  """PIL ``crop((left, top, left + size, top + size))``: zeros outside."""
  h, w = image.shape[:2]
  pad = ((0, max(top + size - h, 0)), (0, max(left + size - w, 0)), (0, 0))
  return np.pad(image, pad)[top:top + size, left:left + size]


def normalise(images: Sequence[np.ndarray]) -> np.ndarray:
  """``ToTensor`` + ``Normalize(0.5, 0.5)`` in float32, stacked.

  Args:
    images: uint8 (H, W, 3) images of one size.

  Returns:
    float32 (N, H, W, 3) ``(x / 255 - 0.5) / 0.5`` in [-1, 1].
  """
  x = np.stack(images).astype(np.float32) / np.float32(255)
  return (x - np.float32(0.5)) / np.float32(0.5)


def positions(stored: Sequence[str], inputs: Sequence[str],
              target: Target) -> tuple[int, ...]:
  """Indices into an example's ``images``: the inputs, then the target(s)."""
  stored = tuple(stored)
  return tuple(stored.index(d) for d in (*inputs, *target_tuple(target)))


def select(element: dict[str, Any], indices: Sequence[int]
           ) -> list[np.ndarray]:
  """The uint8 (H, W, 3) images at ``indices`` of a decoded example."""
  return [np.asarray(element['images'][i]) for i in indices]


def _batch_element(images: list[np.ndarray], valid: bool,
                   target: Target = 'rgb') -> dict[str, np.ndarray]:
  """The inputs, then one target image, or ``(T, H, W, 3)`` for several."""
  x = normalise(images)
  if not valid:
    x = np.zeros_like(x)
  if isinstance(target, str):
    return {'inputs': x[:-1], 'target': x[-1], 'valid': np.bool_(valid)}
  num_targets = len(target)
  return {'inputs': x[:-num_targets], 'target': x[-num_targets:],
          'valid': np.bool_(valid)}


class TrainTransform(grain.transforms.RandomMap):
  """Official training augmentation of one decoded example."""

  def __init__(self, stored: Sequence[str], inputs: Sequence[str],
               target: Target, *, load_size: int, crop_size: int):
    """Builds the transform.

    Args:
      stored: the dataset's domains, in storage order.
      inputs: input domains in output order.
      target: the target domain, or a sequence of them.
      load_size: side after the resize.
      crop_size: side of the random crop (the output size).
    """
    if not 0 < crop_size <= load_size:
      raise ValueError(f'need 0 < crop_size <= load_size, got crop_size '
                       f'{crop_size} and load_size {load_size}')
    self.indices = positions(stored, inputs, target)
    self.target = target
    self.load_size = load_size
    self.crop_size = crop_size

  def random_map(self, element: dict[str, Any],
                 rng: np.random.Generator) -> dict[str, np.ndarray]:
    images = [resize(x, self.load_size, self.load_size)
              for x in select(element, self.indices)]
    # Python's randint(0, n + 1) includes n + 1: one past the last offset.
    high = self.load_size - self.crop_size + 2
    left, top = int(rng.integers(0, high)), int(rng.integers(0, high))
    images = [crop(x, top, left, self.crop_size) for x in images]
    if rng.random() < 0.5:
      images = [x[:, ::-1] for x in images]
    return _batch_element(images, valid=True, target=self.target)


class EvalTransform(grain.transforms.Map):
  """Official ``Resize(size)`` and normalisation; padding is blanked."""

  def __init__(self, stored: Sequence[str], inputs: Sequence[str],
               target: Target, *, size: int):
    self.indices = positions(stored, inputs, target)
    self.target = target
    self.size = size

  def map(self, element: dict[str, Any]) -> dict[str, np.ndarray]:
    images = select(element, self.indices)
    shape = eval_size(*images[0].shape[:2], self.size)
    images = [resize(x, *shape) for x in images]
    out = _batch_element(images, valid=not loaders.is_padding(element),
                         target=self.target)
    out['index'] = np.int32(loaders.record_index(element))
    return out


def eval_element(element: dict[str, Any], inputs: Sequence[str],
                 target: Target, size: int, stored: Sequence[str]
                 ) -> dict[str, np.ndarray]:
  """One decoded example as evaluation sees it: ``{'inputs': (M, H, W, 3),
  'target': (H, W, 3)}`` (``(T, H, W, 3)`` for several targets) float32 in
  [-1, 1]."""
  images = select(element, positions(stored, inputs, target))
  shape = eval_size(*images[0].shape[:2], size)
  return _batch_element([resize(x, *shape) for x in images], valid=True,
                        target=target)


def train_loader(source, *, batch_size: int, seed: int,
                 inputs: Sequence[str] = ('reshading', 'edge_texture'),
                 target: Target = 'rgb', load_size: int = 286,
                 crop_size: int = 256, shard_index: int = 0,
                 shard_count: int = 1, worker_count: int = 0,
                 worker_buffer_size: int = 1, read_threads: int = 2,
                 read_buffer_size: int = 16) -> grain.DataLoader:
  """An endless, shuffled, augmented, resumable training stream.

  See ``loaders.train_loader`` for sharding, determinism and resuming.

  Args:
    source: a source from ``get_source``.
    batch_size: examples per batch in this process.
    seed: shuffling and augmentation seed (non-negative, 32-bit).
    inputs: input domains in output order (official default: shading and
      texture edges, ``-i 2 7 0``).
    target: the target domain, or a sequence of them (``'target'`` then
      ``(B, T, S, S, 3)``).
    load_size: side of the resize before cropping (official 286).
    crop_size: side of the random crop, the output size (official 256).
    shard_index: this process's shard.
    shard_count: number of shards (processes).
    worker_count: grain worker processes; 0 = in this process.
    worker_buffer_size: batches prefetched per worker.
    read_threads: threads reading records in each process.
    read_buffer_size: records read ahead per process (each holds every
      stored domain, decoded).

  Returns:
    A ``grain.DataLoader`` of batches ``{'inputs': (B, M, S, S, 3)
    float32, 'target': (B, S, S, 3) float32, 'valid': (B,) bool}`` with
    ``S = crop_size``.
  """
  inputs, target = check_domains(source, inputs, target)
  transform = TrainTransform(domains(source), inputs, target,
                             load_size=load_size, crop_size=crop_size)
  return loaders.train_loader(
      source, transform, batch_size=batch_size, seed=seed,
      shard_index=shard_index, shard_count=shard_count,
      worker_count=worker_count, worker_buffer_size=worker_buffer_size,
      read_threads=read_threads, read_buffer_size=read_buffer_size)


def eval_loader(source, *, batch_size: int,
                inputs: Sequence[str] = ('reshading', 'edge_texture'),
                target: Target = 'rgb', size: int = 256,
                shard_index: int = 0,
                shard_count: int = 1, worker_count: int = 0,
                read_threads: int = 2,
                read_buffer_size: int = 16) -> grain.DataLoader:
  """Every example exactly once, in source order, in full batches.

  The source is padded to a multiple of ``batch_size * shard_count`` with
  ``valid=False`` examples (images 0), so every shard yields the same
  number of full batches (``loaders.num_eval_batches``); shard k reads the
  k-th contiguous block. Each ``iter()`` starts again from the beginning.

  Args:
    source: a source from ``get_source``.
    batch_size: examples per batch in this process.
    inputs: input domains in output order.
    target: the target domain, or a sequence of them.
    size: the official ``Resize(size)``: shorter side (official 256).
    shard_index: this process's shard.
    shard_count: number of shards (processes).
    worker_count: grain worker processes; 0 = in this process.
    read_threads: threads reading records in each process.
    read_buffer_size: records read ahead per process.

  Returns:
    A ``grain.DataLoader`` of batches ``{'inputs': (B, M, H, W, 3)
    float32, 'target': (B, H, W, 3) float32, 'valid': (B,) bool,
    'index': (B,) int32}``, with
    ``H = W = size`` for square images.
  """
  inputs, target = check_domains(source, inputs, target)
  transform = EvalTransform(domains(source), inputs, target, size=size)
  return loaders.eval_loader(
      source, transform, batch_size=batch_size, shard_index=shard_index,
      shard_count=shard_count, worker_count=worker_count,
      read_threads=read_threads, read_buffer_size=read_buffer_size)
