"""Grain input pipeline for dense multitask learning.

Examples are read with ``tfds.data_source`` from two kinds of builders in
``data/`` and fed by ``grain``; no TensorFlow is involved:

* MTAN's layout, ``nyuv2_mtl`` and ``synthetic_mtl``: float32 ``image`` in
  [0, 1], uint8 ``label`` with 255 = ignore, float32 ``depth`` in metres
  with 0 = missing, float32 ``normal`` unit vectors in camera coordinates,
  X right, Y down, Z forward, all zero = missing;
* the CEN segmentation layout with normals, ``nyud_v2/normals`` (40
  classes), ``nyud_v2/hha_normals`` or ``rgbd_folder`` with
  ``normals=True``: uint8 ``rgb``, uint16 ``depth`` (metres x 5000), uint8
  ``label``, float16 ``normal`` fitted to the depth at build time
  (``data/normals.py``, this project's derivation) and optionally uint8
  ``hha``. ``select`` converts them to the first kind's arrays after the
  official ``CropAlignToMask`` (RGB, depth, HHA and normals centre-cropped
  to the label's size): ``image = rgb / 255``, ``depth / 5000``,
  ``hha / 255``.

Training augmentation, MTAN's (github.com/lorenmt/mtan,
``im2im_pred/create_dataset.py``, ``NYUv2.__getitem__`` with
``augmentation=True``):

1. ``RandomScaleCrop``: ``sc`` uniform from ``(1.0, 1.2, 1.5)``;
   ``h, w = int(H / sc), int(W / sc)``; top ``i`` uniform in
   ``[0, H - h]`` and left ``j`` in ``[0, W - w]``, both ends included
   (Python's ``random.randint``); the window is resized back to
   ``(H, W)`` with PyTorch's ``F.interpolate``: image and normal
   ``mode='bilinear', align_corners=True``, label and depth
   ``mode='nearest'`` (the legacy mode: source index
   ``floor(dst * in / out)`` in float32); then ``depth / sc``, so that
   a zoomed-in view looks nearer. Interpolated normals are not
   renormalised, as in MTAN;
2. horizontal flip with probability 0.5 (``torch.rand(1) < 0.5`` in the
   same ``__getitem__``) of every array, negating the normal's X channel;
3. optionally (``crop_size``, not in MTAN) a uniform random crop of
   ``(height, width)``.

The draws come from grain's per-record generator in this order: the scale
index, ``i``, ``j``, the flip, then the crop's top and left. Evaluation:
no augmentation, full images.

HHA, where an input, is scaled and flipped as the image (bilinear; no
sign change under the flip: its channels are disparity, height and angle).

Model inputs (``INPUTS``): ``'rgb'`` is the image normalised with the
ImageNet mean and std of the segmentation pipeline, ``(x - mean) / std``;
``'depth'`` is the depth in metres tiled to 3 channels, without further
normalisation (this project's choice: MTAN feeds only RGB; depth as an
input is for the channel-exchanging model); ``'hha'`` (CEN-layout builders
that store it) is normalised like RGB, as in the segmentation pipeline.

Batches are dicts of NumPy arrays:

* ``'inputs'``: float32 ``(B, M, H, W, 3)``, modalities in the order of
  ``inputs``;
* ``'label'``: int32 ``(B, H, W)``, 255 = ignore;
* ``'depth'``: float32 ``(B, H, W)`` metres, 0 = missing;
* ``'normal'``: float32 ``(B, H, W, 3)``, all zero = missing;
* ``'valid'``: bool ``(B,)``, False only for the padding examples that fill
  the last eval batch(es) (their inputs, depth and normal are 0 and their
  label is 255).

Resizing is implemented here in NumPy and matches ``F.interpolate`` (the
tests compare them when torch is installed).
"""

import pathlib
from typing import Any, Sequence

import grain
import numpy as np

from cen_jax.tasks.segmentation import input_pipeline as seg_pipeline
from cen_jax.training import loaders
import data
from data import conventions

INPUTS = ('rgb', 'depth', 'hha')
# MTAN's RandomScaleCrop scales.
SCALES = (1.0, 1.2, 1.5)
RGB_MEAN = seg_pipeline.RGB_MEAN
RGB_STD = seg_pipeline.RGB_STD
# The features of the MTAN-layout builders, and of the CEN-layout ones.
FEATURES = ('image', 'label', 'depth', 'normal')
CEN_FEATURES = ('rgb', 'label', 'depth', 'normal')
# Datasets ``get_source`` generates when they are missing.
_GENERATED = ('synthetic_mtl',)

Sample = dict[str, np.ndarray]


def get_source(name: str, split: str, *, data_dir: str | pathlib.Path):
  """A random-access source over a prepared dataset split.

  ``synthetic_mtl`` is generated into ``data_dir`` first if missing;
  ``nyuv2_mtl`` must have been built with ``data.prepare``.

  Args:
    name: dataset name with optional config, e.g. ``'nyuv2_mtl'``,
      ``'synthetic_mtl/tiny'``, ``'nyud_v2/normals'``.
    split: ``'train'`` or ``'test'``.
    data_dir: the TFDS data directory.

  Returns:
    A ``tfds`` array_record data source; its ``dataset_info.metadata``
    holds ``class_names``, ``num_classes`` and ``ignore_label``.

  Raises:
    FileNotFoundError: the dataset is not prepared in ``data_dir``.
  """
  if name.partition('/')[0] in _GENERATED:
    data.prepare(name, data_dir=data_dir)
  return loaders.prepared_source(name, split, data_dir=data_dir)


def class_names(source) -> tuple[str, ...]:
  """The class names stored with a source's dataset, in label order."""
  return tuple(source.dataset_info.metadata['class_names'])


def check_inputs(inputs: Sequence[str]) -> tuple[str, ...]:
  """Checks input modality names without reading data.

  Returns:
    ``inputs`` as a tuple.

  Raises:
    ValueError: an unknown name (listing ``INPUTS``) or no name at all.
  """
  if isinstance(inputs, str):
    raise ValueError(f'inputs must be a sequence of names from {INPUTS}, '
                     f'got the string {inputs!r}')
  inputs = tuple(inputs)
  for m in inputs:
    if m not in INPUTS:
      raise ValueError(f'unknown input modality {m!r}; choose from {INPUTS}')
  if not inputs:
    raise ValueError(f'give at least one input modality from {INPUTS}')
  return inputs


def _check_source(source, inputs: Sequence[str] = ()) -> None:
  """A source with ``dataset_info`` must store every feature needed.

  Raises:
    ValueError: a feature is missing; the message names the dataset, what
      it has and a config that stores it.
  """
  info = getattr(source, 'dataset_info', None)
  if info is None:
    return
  have = set(info.features)
  needed = CEN_FEATURES if 'rgb' in have else FEATURES
  missing = [f for f in needed if f not in have]
  if missing:
    hint = ('the CEN layout needs normals fitted at build time: '
            'nyud_v2/normals, nyud_v2/hha_normals, or rgbd_folder with '
            'normals=True' if 'rgb' in have else
            'multitask reads nyuv2_mtl, synthetic_mtl, nyud_v2/normals or '
            'nyud_v2/hha_normals')
    raise ValueError(f'{info.full_name} has no feature {missing}; it has '
                     f'{sorted(have)} ({hint})')
  if 'hha' in inputs and 'hha' not in have:
    raise ValueError(f'{info.full_name} has no feature hha for the input '
                     f"'hha'; it has {sorted(have)} (use a config that "
                     'computes it, e.g. nyud_v2/hha_normals)')


# Resizing as PyTorch's F.interpolate, in NumPy.


def nearest_indices(in_size: int, out_size: int) -> np.ndarray:
  """Source indices of PyTorch's legacy ``mode='nearest'``.

  ``min(floor(dst * scale), in_size - 1)`` with ``scale = in_size /
  out_size``, both the division and the product in float32 as PyTorch
  computes them (``nearest_idx`` in ``UpSample.h``); exact integer
  arithmetic differs in rare cases, e.g. ``in_size=2, out_size=82`` maps
  ``dst=41`` to 0.

  Returns:
    int64 ``(out_size,)``.
  """
  scale = np.float32(in_size) / np.float32(out_size)
  src = np.floor(np.arange(out_size, dtype=np.float32) * scale)
  return np.minimum(src.astype(np.int64), in_size - 1)


def resize_nearest(x: np.ndarray, height: int, width: int) -> np.ndarray:
  """``F.interpolate(mode='nearest')`` of ``(H, W)`` or ``(H, W, C)``.

  Returns:
    ``(height, width, ...)``, same dtype; every value is one of ``x``'s.
  """
  rows = nearest_indices(x.shape[0], height)
  cols = nearest_indices(x.shape[1], width)
  return x[rows][:, cols]


def _linear_weights(in_size: int, out_size: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Neighbours and weight of ``align_corners=True`` linear interpolation.

  The source coordinate ``src = dst * (in - 1) / (out - 1)`` (0 when
  ``out == 1``) is computed in float32, as PyTorch does for float32 images
  (``area_pixel_compute_source_index``): at 288x384 exact arithmetic would
  differ from it by up to 2e-5 of a pixel.

  Returns:
    ``(lo, hi, frac)``: output index ``d`` is
    ``x[lo] * (1 - frac) + x[hi] * frac``.
  """
  scale = (np.float32(in_size - 1) / np.float32(out_size - 1)
           if out_size > 1 else np.float32(0))
  src = np.arange(out_size, dtype=np.float32) * scale
  lo = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
  hi = np.minimum(lo + 1, in_size - 1)
  frac = np.clip(src - lo, 0, 1).astype(np.float64)
  return lo, hi, frac


def resize_bilinear(x: np.ndarray, height: int, width: int) -> np.ndarray:
  """``F.interpolate(mode='bilinear', align_corners=True)``, no antialias.

  The weights are PyTorch's float32 ones; the sums are taken in float64,
  so the result agrees with PyTorch's to float32 rounding.

  Args:
    x: ``(H, W)`` or ``(H, W, C)``.
    height: output height.
    width: output width.

  Returns:
    float32 ``(height, width, ...)``.
  """
  x = np.asarray(x, np.float64)
  lo, hi, frac = _linear_weights(x.shape[0], height)
  frac = frac.reshape((-1,) + (1,) * (x.ndim - 1))
  x = x[lo] * (1 - frac) + x[hi] * frac
  lo, hi, frac = _linear_weights(x.shape[1], width)
  frac = frac.reshape((1, -1) + (1,) * (x.ndim - 2))
  x = x[:, lo] * (1 - frac) + x[:, hi] * frac
  return x.astype(np.float32)


# The augmentation, as pure functions of a sample and the draws.


def select(element: dict[str, Any], inputs: Sequence[str] = ()) -> Sample:
  """The image, label, depth and normal of a decoded example, as arrays.

  A CEN-layout example (``rgb``, uint16 ``depth``, float16 ``normal``) is
  first centre-cropped to its label (``CropAlignToMask``) and converted:
  ``image = rgb / 255``, ``depth / 5000`` (metres), ``hha / 255``.

  Args:
    element: a decoded example of either layout (module docstring).
    inputs: the model's input modalities; ``'hha'`` among them adds the
      ``'hha'`` array.

  Returns:
    ``{'image': (H, W, 3) float32, 'label': (H, W) uint8, 'depth': (H, W)
    float32, 'normal': (H, W, 3) float32}`` and, with ``'hha'`` in
    ``inputs``, ``'hha': (H, W, 3) float32`` in [0, 1].
  """
  label = np.asarray(element['label'], np.uint8)
  if 'image' in element:
    sample = {'image': np.asarray(element['image'], np.float32),
              'label': label,
              'depth': np.asarray(element['depth'], np.float32),
              'normal': np.asarray(element['normal'], np.float32)}
    if 'hha' in inputs:
      sample['hha'] = np.asarray(element['hha'], np.float32)
    return sample

  def aligned(key):
    return seg_pipeline.align_to_mask(np.asarray(element[key]), label.shape)
  sample = {'image': aligned('rgb').astype(np.float32) / np.float32(255),
            'label': label,
            'depth': (aligned('depth').astype(np.float32)
                      * np.float32(1 / conventions.DEPTH_SCALE)),
            'normal': aligned('normal').astype(np.float32)}
  if 'hha' in inputs:
    sample['hha'] = aligned('hha').astype(np.float32) / np.float32(255)
  return sample


def scale_crop(sample: Sample, sc: float, i: int, j: int) -> Sample:
  """MTAN's ``RandomScaleCrop`` for given draws.

  Args:
    sample: as ``select`` returns, of size ``(H, W)``.
    sc: the scale, e.g. one of ``SCALES``.
    i: top of the window, in ``[0, H - int(H / sc)]``.
    j: left of the window, in ``[0, W - int(W / sc)]``.

  Returns:
    The ``(int(H / sc), int(W / sc))`` window at ``(i, j)`` resized back to
    ``(H, W)``: image, normal and HHA bilinear (``align_corners=True``),
    label and depth legacy nearest, and the depth divided by ``sc``.
  """
  height, width = sample['label'].shape
  h, w = int(height / sc), int(width / sc)
  window = {k: x[i:i + h, j:j + w] for k, x in sample.items()}
  out = {
      'image': resize_bilinear(window['image'], height, width),
      'label': resize_nearest(window['label'], height, width),
      'depth': (resize_nearest(window['depth'], height, width)
                / np.float32(sc)).astype(np.float32),
      'normal': resize_bilinear(window['normal'], height, width),
  }
  if 'hha' in window:
    out['hha'] = resize_bilinear(window['hha'], height, width)
  return out


def flip(sample: Sample) -> Sample:
  """Horizontal flip of every array; the normal's X (channel 0) negated.

  X points right in camera coordinates, so mirroring the image reverses
  it; Y (down) and Z (forward) are unchanged.
  """
  out = {k: np.ascontiguousarray(x[:, ::-1]) for k, x in sample.items()}
  # A product, not an in-place negation: for W = 1 the flipped view is
  # already contiguous and shares the input's memory.
  out['normal'] = out['normal'] * np.float32([-1, 1, 1])
  return out


def crop(sample: Sample, top: int, left: int, height: int,
         width: int) -> Sample:
  """The same spatial window of every array."""
  return {k: x[top:top + height, left:left + width]
          for k, x in sample.items()}


def model_inputs(sample: Sample, inputs: Sequence[str]) -> np.ndarray:
  """The model's input modalities, stacked in the order of ``inputs``.

  Args:
    sample: as ``select`` returns.
    inputs: names from ``INPUTS``.

  Returns:
    float32 ``(M, H, W, 3)``: ``'rgb'`` ``(image - mean) / std`` with the
    ImageNet mean and std (computed in float64, as the segmentation
    pipeline), ``'hha'`` the same of the HHA in [0, 1], ``'depth'`` the
    depth in metres on all 3 channels.
  """
  out = []
  for m in inputs:
    if m in ('rgb', 'hha'):
      x = ((sample['image' if m == 'rgb' else 'hha'].astype(np.float64)
            - np.array(RGB_MEAN)) / np.array(RGB_STD))
    else:
      x = np.repeat(sample['depth'][..., None], 3, axis=-1)
    out.append(x.astype(np.float32))
  return np.stack(out)


def to_example(sample: Sample, inputs: Sequence[str],
               valid: bool = True) -> dict[str, np.ndarray]:
  """One batch element; an invalid one is blanked (the shapes kept).

  Returns:
    ``{'inputs': (M, H, W, 3) float32, 'label': (H, W) int32, 'depth':
    (H, W) float32, 'normal': (H, W, 3) float32, 'valid': bool}``; when
    ``valid`` is False the inputs, depth and normal are 0 and the label is
    ``IGNORE_LABEL``.
  """
  example = {'inputs': model_inputs(sample, inputs),
             'label': sample['label'].astype(np.int32),
             'depth': sample['depth'].astype(np.float32),
             'normal': sample['normal'].astype(np.float32),
             'valid': np.bool_(valid)}
  if not valid:
    example['inputs'] = np.zeros_like(example['inputs'])
    example['label'] = np.full_like(example['label'],
                                    conventions.IGNORE_LABEL)
    example['depth'] = np.zeros_like(example['depth'])
    example['normal'] = np.zeros_like(example['normal'])
  return example


def _crop_shape(crop_size: int | tuple[int, int] | None
                ) -> tuple[int, int] | None:
  if crop_size is None:
    return None
  shape = ((crop_size, crop_size) if isinstance(crop_size, int)
           else tuple(crop_size))
  if len(shape) != 2 or min(shape) < 1:
    raise ValueError(f'crop_size must be a positive int or (height, width), '
                     f'got {crop_size!r}')
  return shape


class TrainTransform(grain.transforms.RandomMap):
  """MTAN's training augmentation of one decoded example."""

  def __init__(self, inputs: Sequence[str], *,
               scales: Sequence[float] = SCALES,
               crop_size: int | tuple[int, int] | None = None,
               augment: bool = True):
    """Builds the transform.

    Args:
      inputs: input modalities in output order, from ``INPUTS``.
      scales: the scales ``RandomScaleCrop`` chooses from (each >= 1).
      crop_size: an optional final random crop, ``(height, width)`` or a
        side; ``None`` keeps the full image.
      augment: False skips the scale-crop and the flip (MTAN's paper
        protocol: its published numbers use no augmentation).

    Raises:
      ValueError: unknown inputs, a scale below 1 or a bad ``crop_size``.
    """
    self.inputs = check_inputs(inputs)
    self.scales = tuple(float(s) for s in scales)
    if not self.scales or min(self.scales) < 1:
      raise ValueError(f'scales must be >= 1 (a window inside the image), '
                       f'got {scales!r}')
    self.crop_shape = _crop_shape(crop_size)
    self.augment = bool(augment)

  def random_map(self, element: dict[str, Any],
                 rng: np.random.Generator) -> dict[str, np.ndarray]:
    sample = select(element, self.inputs)
    height, width = sample['label'].shape
    if self.augment:
      sc = self.scales[int(rng.integers(len(self.scales)))]
      i = int(rng.integers(0, height - int(height / sc) + 1))
      j = int(rng.integers(0, width - int(width / sc) + 1))
      sample = scale_crop(sample, sc, i, j)
      if rng.random() < 0.5:
        sample = flip(sample)
    if self.crop_shape is not None:
      ch, cw = self.crop_shape
      if height < ch or width < cw:
        raise ValueError(f'crop_size {self.crop_shape} is larger than the '
                         f'{height}x{width} image')
      top = int(rng.integers(0, height - ch + 1))
      left = int(rng.integers(0, width - cw + 1))
      sample = crop(sample, top, left, ch, cw)
    return to_example(sample, self.inputs)


class EvalTransform(grain.transforms.Map):
  """No augmentation; padding examples are blanked and marked invalid."""

  def __init__(self, inputs: Sequence[str]):
    self.inputs = check_inputs(inputs)

  def map(self, element: dict[str, Any]) -> dict[str, np.ndarray]:
    return to_example(select(element, self.inputs), self.inputs,
                      valid=not loaders.is_padding(element))


def train_loader(source, *, inputs: Sequence[str], batch_size: int,
                 seed: int, scales: Sequence[float] = SCALES,
                 crop_size: int | tuple[int, int] | None = None,
                 augment: bool = True,
                 shard_index: int = 0, shard_count: int = 1,
                 worker_count: int = 0, worker_buffer_size: int = 1,
                 read_threads: int = 2,
                 read_buffer_size: int = 32) -> grain.DataLoader:
  """An endless, shuffled, augmented, resumable training stream.

  See ``loaders.train_loader`` for sharding, determinism and resuming.

  Args:
    source: a source from ``get_source`` (or any random-access sequence of
      examples with the builders' features).
    inputs: input modalities in output order, from ``INPUTS``.
    batch_size: examples per batch in this process.
    seed: shuffling and augmentation seed (non-negative, 32-bit).
    scales: ``RandomScaleCrop``'s scales (MTAN: 1.0, 1.2, 1.5).
    crop_size: optional final random crop, ``(height, width)`` or a side.
    augment: False skips the scale-crop and flip (``TrainTransform``).
    shard_index: this process's shard.
    shard_count: number of shards (processes).
    worker_count: grain worker processes; 0 = in this process. Workers read
      grain's absl flags, so they need parsed flags (``absl.app.run``).
    worker_buffer_size: batches prefetched per worker.
    read_threads: threads reading records in each process.
    read_buffer_size: records read ahead per process.

  Returns:
    A ``grain.DataLoader`` of batches ``{'inputs': (B, M, H, W, 3) float32,
    'label': (B, H, W) int32, 'depth': (B, H, W) float32, 'normal':
    (B, H, W, 3) float32, 'valid': (B,) bool}``, ``(H, W)`` the crop if
    given, else the images' size (which must then be the same for all).

  Raises:
    ValueError: unknown inputs, or a source without the multitask features.
  """
  inputs = check_inputs(inputs)
  _check_source(source, inputs)
  transform = TrainTransform(inputs, scales=scales, crop_size=crop_size,
                             augment=augment)
  return loaders.train_loader(
      source, transform, batch_size=batch_size, seed=seed,
      shard_index=shard_index, shard_count=shard_count,
      worker_count=worker_count, worker_buffer_size=worker_buffer_size,
      read_threads=read_threads, read_buffer_size=read_buffer_size)


def eval_loader(source, *, inputs: Sequence[str], batch_size: int,
                shard_index: int = 0, shard_count: int = 1,
                worker_count: int = 0, read_threads: int = 2,
                read_buffer_size: int = 32) -> grain.DataLoader:
  """Every example exactly once, in source order, in full batches.

  The source is padded to a multiple of ``batch_size * shard_count`` with
  ``valid=False`` examples, so every shard yields the same number of full
  batches (``loaders.num_eval_batches``); shard k reads the k-th
  contiguous block. Each ``iter()`` starts again from the beginning.

  Args:
    source: a source from ``get_source``.
    inputs: input modalities in output order, from ``INPUTS``.
    batch_size: examples per batch in this process.
    shard_index: this process's shard.
    shard_count: number of shards (processes).
    worker_count: grain worker processes; 0 = in this process.
    read_threads: threads reading records in each process.
    read_buffer_size: records read ahead per process.

  Returns:
    A ``grain.DataLoader`` of batches as ``train_loader``'s, full size.

  Raises:
    ValueError: unknown inputs, or a source without the multitask features.
  """
  inputs = check_inputs(inputs)
  _check_source(source, inputs)
  return loaders.eval_loader(
      source, EvalTransform(inputs), batch_size=batch_size,
      shard_index=shard_index, shard_count=shard_count,
      worker_count=worker_count, read_threads=read_threads,
      read_buffer_size=read_buffer_size)
