"""Grain input pipeline for RGB-D segmentation, as the official CEN loader.

Examples are read with ``tfds.data_source`` from the array_record builders
in ``data/`` and fed by ``grain`` (seeded, sharded per process, resumable,
optionally multiprocess); no TensorFlow is involved.

Training transforms, in the official order (reference §5.2,
``utils/transforms.py``):

1. ``CropAlignToMask``: centre-crop every input to the mask size (offset
   ``(h - mask_h) // 2``, the odd pixel dropped at the bottom/right); the
   grey depth is tiled to 3 channels first, as the official loader does;
2. ``ResizeAndScale``: ``s ~ U(scale_range)``, raised to
   ``shorter_side / min(h, w)`` when ``min(h, w) * s < shorter_side``;
   ``cv2.resize(fx=s, fy=s)`` with bicubic for RGB and HHA (the official
   default for inputs other than depth), nearest for depth and mask;
3. ``Pad`` to at least ``crop_size`` per side, ``ceil((crop_size - h) / 2)``
   on both sides (may overshoot by one); input channel c is padded with
   ``PAD_VALUES[c]`` (the ImageNet mean x 255) and the mask with 255. As in
   the official code the constants are written into the integer arrays,
   so the padded values are 123, 116 and 103;
4. ``RandomMirror``: horizontal flip of all inputs and the mask, p = 0.5;
5. ``RandomCrop`` of ``crop_size`` (made even, as the official code does);
6. ``Normalise``: RGB and HHA ``(x / 255 - mean) / std`` with ImageNet
   mean/std, depth ``x * (1 / 5000)``; no mean/std for depth.

Evaluation: steps 1 and 6 only, full image.

Batches are dicts of NumPy arrays:

* ``'inputs'``: float32 ``(B, M, H, W, 3)``, modalities in the order of
  ``modalities``;
* ``'label'``: int32 ``(B, H, W)``, 255 = ignore;
* ``'valid'``: bool ``(B,)``, False only for the padding examples that fill
  the last eval batch(es).

Deviation: training batches run across epoch boundaries (an endless
shuffled stream, reshuffled every epoch) instead of dropping each epoch's
last partial batch.
"""

import pathlib
from typing import Any, Sequence

import cv2
import grain
import numpy as np

from cen_jax.training import loaders
import data
from data import conventions

MODALITIES = ('rgb', 'depth', 'hha')
# ImageNet mean in 0..255: the official per-channel padding values.
PAD_VALUES = (123.675, 116.28, 103.53)
RGB_MEAN = (0.485, 0.456, 0.406)
RGB_STD = (0.229, 0.224, 0.225)
# The official ResizeAndScale: nearest for depth, bicubic otherwise.
_INTERPOLATION = {'rgb': cv2.INTER_CUBIC, 'depth': cv2.INTER_NEAREST,
                  'hha': cv2.INTER_CUBIC}

Sample = dict[str, np.ndarray]


def get_source(name: str, split: str, *, data_dir: str | pathlib.Path):
  """A random-access source over a prepared dataset split.

  ``synthetic_rgbd`` is generated into ``data_dir`` first if missing; every
  other dataset must have been built with ``data.prepare``.

  Args:
    name: dataset name with optional config, e.g. ``'nyud_v2/hha'``,
      ``'synthetic_rgbd'``, ``'rgbd_folder/my_rooms'``.
    split: ``'train'`` or ``'test'``.
    data_dir: the TFDS data directory.

  Returns:
    A ``tfds`` array_record data source; its ``dataset_info.metadata``
    holds ``class_names`` and ``num_classes``.

  Raises:
    FileNotFoundError: the dataset is not prepared in ``data_dir``.
  """
  if name.partition('/')[0] == 'synthetic_rgbd':
    data.prepare(name, data_dir=data_dir)
  return loaders.prepared_source(name, split, data_dir=data_dir)


def class_names(source) -> tuple[str, ...]:
  """The class names stored with a source's dataset, in label order."""
  return tuple(source.dataset_info.metadata['class_names'])


def _check_modalities(source, modalities: Sequence[str]) -> tuple[str, ...]:
  modalities = tuple(modalities)
  for m in modalities:
    if m not in MODALITIES:
      raise ValueError(f'unknown modality {m!r}; choose from {MODALITIES}')
  if not modalities:
    raise ValueError(f'give at least one modality from {MODALITIES}')
  info = getattr(source, 'dataset_info', None)
  if info is not None:
    missing = [m for m in modalities if m not in info.features]
    if missing:
      raise ValueError(
          f'{info.full_name} has no feature {missing}; it has '
          f'{sorted(info.features)} (HHA needs a config that computes it, '
          'e.g. nyud_v2/hha)')
  return modalities


def align_to_mask(image: np.ndarray, mask_shape: tuple[int, int]
                  ) -> np.ndarray:
  """Official ``CropAlignToMask``: centre-crop ``(H, W, ...)`` to the mask.

  Args:
    image: ``(H, W)`` or ``(H, W, C)`` with ``H >= mask_h``, ``W >= mask_w``.
    mask_shape: ``(mask_h, mask_w)``.

  Returns:
    ``image[top:top + mask_h, left:left + mask_w]`` with
    ``top = (H - mask_h) // 2`` and ``left = (W - mask_w) // 2``.

  Raises:
    ValueError: the image is smaller than the mask.
  """
  h, w = image.shape[:2]
  mh, mw = mask_shape
  if h < mh or w < mw:
    raise ValueError(f'input {h}x{w} is smaller than its mask {mh}x{mw}')
  top, left = (h - mh) // 2, (w - mw) // 2
  return image[top:top + mh, left:left + mw]


def select(element: dict[str, Any], modalities: Sequence[str]) -> Sample:
  """Picks the modalities and label, depth tiled to 3 channels, aligned.

  Args:
    element: a decoded example (``rgb``, ``depth``, ``label``, ...).
    modalities: names from ``MODALITIES``.

  Returns:
    ``{modality: (H, W, 3) uint8/uint16, 'label': (H, W) uint8}`` with every
    input centre-cropped to the label's size.
  """
  label = np.asarray(element['label'])
  sample = {'label': label}
  for m in modalities:
    x = np.asarray(element[m])
    if m == 'depth':
      x = np.repeat(x[..., None], 3, axis=-1)
    sample[m] = align_to_mask(x, label.shape)
  return sample


def scale_factor(shape: tuple[int, int], s: float, shorter_side: int
                 ) -> float:
  """The official scale rule: ``s``, raised so the shorter side >= target."""
  min_side = min(shape[:2])
  if min_side * s < shorter_side:
    return shorter_side / min_side
  return s


def resize(sample: Sample, scale: float) -> Sample:
  """``cv2.resize(fx=fy=scale)``: bicubic RGB/HHA, nearest depth and mask."""
  out = {}
  for key, x in sample.items():
    inter = _INTERPOLATION.get(key, cv2.INTER_NEAREST)
    out[key] = cv2.resize(x, None, fx=scale, fy=scale, interpolation=inter)
  return out


def pad(sample: Sample, size: int) -> Sample:
  """Official ``Pad``: ``ceil((size - h) / 2)`` both sides, never negative.

  Args:
    sample: inputs ``(H, W, 3)`` and ``'label'`` ``(H, W)``.
    size: minimum output height and width.

  Returns:
    The padded sample: channel c of every input with ``PAD_VALUES[c]`` cast
    to the input's dtype, the label with 255.
  """
  h, w = sample['label'].shape
  ph = max((size - h + 1) // 2, 0)
  pw = max((size - w + 1) // 2, 0)
  widths = ((ph, ph), (pw, pw))
  out = {'label': np.pad(sample['label'], widths,
                         constant_values=conventions.IGNORE_LABEL)}
  for key, x in sample.items():
    if key != 'label':
      out[key] = np.stack([
          np.pad(x[..., c], widths, constant_values=PAD_VALUES[c])
          for c in range(3)], axis=-1)
  return out


def flip(sample: Sample) -> Sample:
  """Horizontal flip of every input and the label together."""
  return {key: np.ascontiguousarray(x[:, ::-1]) for key, x in sample.items()}


def crop(sample: Sample, top: int, left: int, height: int,
         width: int) -> Sample:
  """The same spatial window of every input and the label."""
  return {key: x[top:top + height, left:left + width]
          for key, x in sample.items()}


def normalise(sample: Sample, modalities: Sequence[str]) -> np.ndarray:
  """Official ``Normalise``, stacked in modality order.

  Args:
    sample: ``(H, W, 3)`` inputs keyed by modality.
    modalities: output order.

  Returns:
    float32 ``(M, H, W, 3)``: RGB/HHA ``(x / 255 - mean) / std``, depth
    ``x / 5000`` (computed in float64, as NumPy does in the official code).
  """
  mean, std = np.array(RGB_MEAN), np.array(RGB_STD)
  out = []
  for m in modalities:
    x = sample[m].astype(np.float64)
    out.append(x * (1.0 / conventions.DEPTH_SCALE) if m == 'depth'
               else (x / 255.0 - mean) / std)
  return np.stack(out).astype(np.float32)


def _random_crop(sample: Sample, crop_size: int,
                 rng: np.random.Generator) -> Sample:
  size = crop_size - crop_size % 2  # The official RandomCrop forces even.
  h, w = sample['label'].shape
  new_h, new_w = min(h, size), min(w, size)
  top = int(rng.integers(0, h - new_h + 1))
  left = int(rng.integers(0, w - new_w + 1))
  return crop(sample, top, left, new_h, new_w)


class TrainTransform(grain.transforms.RandomMap):
  """Official training augmentation of one decoded example."""

  def __init__(self, modalities: Sequence[str], crop_size: int,
               scale_range: tuple[float, float], shorter_side: int):
    self.modalities = tuple(modalities)
    self.crop_size = crop_size
    self.scale_range = tuple(scale_range)
    self.shorter_side = shorter_side

  def random_map(self, element: dict[str, Any],
                 rng: np.random.Generator) -> dict[str, np.ndarray]:
    sample = select(element, self.modalities)
    s = rng.uniform(*self.scale_range)
    sample = resize(sample, scale_factor(sample['label'].shape, s,
                                         self.shorter_side))
    sample = pad(sample, self.crop_size)
    if rng.integers(2):
      sample = flip(sample)
    sample = _random_crop(sample, self.crop_size, rng)
    return {'inputs': normalise(sample, self.modalities),
            'label': sample['label'].astype(np.int32),
            'valid': np.bool_(True)}


class EvalTransform(grain.transforms.Map):
  """Centre-crop to the mask and normalise; padding examples are blanked."""

  def __init__(self, modalities: Sequence[str]):
    self.modalities = tuple(modalities)

  def map(self, element: dict[str, Any]) -> dict[str, np.ndarray]:
    sample = select(element, self.modalities)
    inputs = normalise(sample, self.modalities)
    label = sample['label'].astype(np.int32)
    if loaders.is_padding(element):
      return {'inputs': np.zeros_like(inputs),
              'label': np.full_like(label, conventions.IGNORE_LABEL),
              'valid': np.bool_(False)}
    return {'inputs': inputs, 'label': label, 'valid': np.bool_(True)}


def train_loader(source, *, batch_size: int, seed: int,
                 modalities: Sequence[str] = ('rgb', 'depth'),
                 crop_size: int = 500,
                 scale_range: tuple[float, float] = (0.5, 2.0),
                 shorter_side: int = 350, shard_index: int = 0,
                 shard_count: int = 1, worker_count: int = 0,
                 worker_buffer_size: int = 1, read_threads: int = 2,
                 read_buffer_size: int = 32) -> grain.DataLoader:
  """An endless, shuffled, augmented, resumable training stream.

  Each process reads its own shard (``ShardOptions(shard_index,
  shard_count)``, e.g. ``jax.process_index()``, ``jax.process_count()``).
  The augmentation draws come from grain's per-record generator
  (``Philox(seed + global index)``), so the batches depend only on
  ``seed`` and the sharding, not on ``worker_count``. Resume with
  ``it.set_state(saved)`` on ``iter(loader)`` of an identically built
  loader.

  Args:
    source: a random-access source (``get_source``).
    batch_size: examples per batch in this process; last partial batches
      are dropped.
    seed: shuffling and augmentation seed (non-negative, 32-bit).
    modalities: inputs in output order, from ``MODALITIES``.
    crop_size: training crop side (made even).
    scale_range: random scale bounds.
    shorter_side: minimum shorter side after scaling.
    shard_index: this process's shard.
    shard_count: number of shards (processes).
    worker_count: grain worker processes; 0 = in this process. Workers read
      grain's absl flags, so they need parsed flags (``absl.app.run``).
    worker_buffer_size: batches prefetched per worker.
    read_threads: threads reading records in each process.
    read_buffer_size: records read ahead per process (grain's default of
      500 decoded full-size RGB-D frames would hold about 1 GB).

  Returns:
    A ``grain.DataLoader`` of batches ``{'inputs': (B, M, C, C, 3) float32,
    'label': (B, C, C) int32, 'valid': (B,) bool}`` with ``C`` the crop.
  """
  modalities = _check_modalities(source, modalities)
  return loaders.train_loader(
      source,
      TrainTransform(modalities, crop_size, scale_range, shorter_side),
      batch_size=batch_size, seed=seed, shard_index=shard_index,
      shard_count=shard_count, worker_count=worker_count,
      worker_buffer_size=worker_buffer_size, read_threads=read_threads,
      read_buffer_size=read_buffer_size)


def eval_loader(source, *, batch_size: int,
                modalities: Sequence[str] = ('rgb', 'depth'),
                shard_index: int = 0, shard_count: int = 1,
                worker_count: int = 0, read_threads: int = 2,
                read_buffer_size: int = 32) -> grain.DataLoader:
  """Every example exactly once, in source order, in full batches.

  The source is padded to a multiple of ``batch_size * shard_count`` with
  ``valid=False`` examples (label 255, inputs 0), so every shard yields the
  same number of full batches (``loaders.num_eval_batches``); shard k reads
  the k-th contiguous block. Each ``iter()`` starts again from the
  beginning.

  Args:
    source: a random-access source (``get_source``).
    batch_size: examples per batch in this process.
    modalities: inputs in output order, from ``MODALITIES``.
    shard_index: this process's shard.
    shard_count: number of shards (processes).
    worker_count: grain worker processes; 0 = in this process.
    read_threads: threads reading records in each process.
    read_buffer_size: records read ahead per process.

  Returns:
    A ``grain.DataLoader`` of batches ``{'inputs': (B, M, H, W, 3)
    float32, 'label': (B, H, W) int32, 'valid': (B,) bool}``.
  """
  modalities = _check_modalities(source, modalities)
  return loaders.eval_loader(
      source, EvalTransform(modalities), batch_size=batch_size,
      shard_index=shard_index, shard_count=shard_count,
      worker_count=worker_count, read_threads=read_threads,
      read_buffer_size=read_buffer_size)
