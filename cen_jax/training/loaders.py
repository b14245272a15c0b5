"""Task-independent grain loaders: a training stream and one eval pass.

A task supplies its random-access source and its per-example transform; the
sampling, sharding, padding and batching here are the same for every task:

* ``train_loader``: an endless stream, reshuffled every epoch, each process
  reading its own shard, resumable from ``iter(loader).get_state()``;
* ``eval_loader``: every example exactly once, in source order, padded to
  full batches on every shard with records marked by ``is_padding`` (the
  task's transform blanks them and sets ``valid=False``).
"""

import pathlib
from typing import Any, Sequence

import grain
import numpy as np
import tensorflow_datasets as tfds

# Keys set on every record that ``PaddedSource`` returns.
PADDING_KEY = '_padding'
INDEX_KEY = '_index'


def prepared_source(name: str, split: str, *,
                    data_dir: str | pathlib.Path):
  """The array_record data source of a dataset built in ``data_dir``.

  Raises:
    FileNotFoundError: the dataset is not prepared there (the message says
      how to build it).
  """
  hint = (f'dataset {name!r} is not prepared in {data_dir}; build it with '
          f'data.prepare({name!r}, data_dir=..., manual_dir=...)')
  try:
    builder = tfds.builder(name, data_dir=str(data_dir),
                           file_format='array_record')
  except ValueError as e:
    raise FileNotFoundError(f'{hint} ({e})') from e
  if not builder.is_prepared():
    raise FileNotFoundError(hint)
  return builder.as_data_source(split=split)


def is_padding(element: dict[str, Any]) -> bool:
  """Whether ``element`` is one of ``PaddedSource``'s padding records."""
  return bool(element.get(PADDING_KEY, False))


def record_index(element: dict[str, Any]) -> int:
  """The position of a ``PaddedSource`` record in the padded split."""
  return int(element[INDEX_KEY])


class PaddedSource:
  """A source extended with padding records that copy the last example.

  Records at ``index >= len(source)`` are the last real example with
  ``PADDING_KEY`` True (so they have its size); every record gets the key,
  and ``INDEX_KEY``, its position (what seeds per-example randomness at
  evaluation, independently of batch size and sharding).
  """

  def __init__(self, source, length: int):
    if length < len(source):
      raise ValueError(f'padded length {length} < {len(source)} records')
    self._source = source
    self._length = length

  def __len__(self) -> int:
    return self._length

  def __getitem__(self, index: int) -> dict[str, Any]:
    n = len(self._source)
    if not 0 <= index < self._length:
      raise IndexError(f'index {index} out of range for {self._length}')
    element = dict(self._source[min(index, n - 1)])
    element[PADDING_KEY] = index >= n
    element[INDEX_KEY] = index
    return element

  def __repr__(self) -> str:
    return f'PaddedSource({self._source!r}, length={self._length})'


def num_eval_batches(num_examples: int, batch_size: int,
                     shard_count: int = 1) -> int:
  """Batches per shard that ``eval_loader`` yields (same on every shard)."""
  return -(-num_examples // (batch_size * shard_count))


def stack_batch(examples: Sequence[dict[str, np.ndarray]]
                ) -> dict[str, np.ndarray]:
  """Stacks examples; different image sizes are an error, not a crash."""
  for key in examples[0]:
    shapes = {np.shape(e[key]) for e in examples}
    if len(shapes) > 1:
      raise ValueError(
          f'eval images in one batch must share a size, got {key!r} of '
          f'shapes {sorted(shapes)}; use batch_size=1 for datasets with '
          'mixed image sizes')
  return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


def _read_options(threads: int, buffer_size: int) -> grain.ReadOptions:
  return grain.ReadOptions(num_threads=threads,
                           prefetch_buffer_size=buffer_size)


def train_loader(source, transform: grain.transforms.RandomMap, *,
                 batch_size: int, seed: int, shard_index: int = 0,
                 shard_count: int = 1, worker_count: int = 0,
                 worker_buffer_size: int = 1, read_threads: int = 2,
                 read_buffer_size: int = 32) -> grain.DataLoader:
  """An endless, shuffled, transformed, resumable training stream.

  Each process reads its own shard (``ShardOptions(shard_index,
  shard_count)``, e.g. ``jax.process_index()``, ``jax.process_count()``).
  A ``RandomMap`` draws from grain's per-record generator
  (``Philox(seed + global index)``), so the batches depend only on ``seed``
  and the sharding, not on ``worker_count``. Resume with
  ``it.set_state(saved)`` on ``iter(loader)`` of an identically built
  loader.

  Args:
    source: a random-access source.
    transform: the task's per-example augmentation.
    batch_size: examples per batch in this process; batches run across
      epoch boundaries, so none is partial.
    seed: shuffling and augmentation seed (non-negative, 32-bit).
    shard_index: this process's shard.
    shard_count: number of shards (processes).
    worker_count: grain worker processes; 0 = in this process. Workers read
      grain's absl flags, so they need parsed flags (``absl.app.run``).
    worker_buffer_size: batches prefetched per worker.
    read_threads: threads reading records in each process.
    read_buffer_size: records read ahead per process (grain's default of
      500 full-size decoded records can hold gigabytes).

  Returns:
    A ``grain.DataLoader`` of the transform's outputs, stacked.
  """
  shard = grain.sharding.ShardOptions(shard_index, shard_count,
                                      drop_remainder=True)
  sampler = grain.samplers.IndexSampler(
      num_records=len(source), shard_options=shard, shuffle=True,
      num_epochs=None, seed=seed)
  ops = [transform, grain.transforms.Batch(batch_size, drop_remainder=True)]
  return grain.DataLoader(
      data_source=source, sampler=sampler, operations=ops,
      worker_count=worker_count, worker_buffer_size=worker_buffer_size,
      shard_options=shard,
      read_options=_read_options(read_threads, read_buffer_size))


def eval_loader(source, transform: grain.transforms.Map, *,
                batch_size: int, shard_index: int = 0, shard_count: int = 1,
                worker_count: int = 0, read_threads: int = 2,
                read_buffer_size: int = 32) -> grain.DataLoader:
  """Every example exactly once, in source order, in full batches.

  The source is padded to a multiple of ``batch_size * shard_count`` with
  ``PaddedSource``, so every shard yields the same number of full batches
  (``num_eval_batches``); shard k reads the k-th contiguous block. Each
  ``iter()`` starts again from the beginning.

  Args:
    source: a random-access source.
    transform: the task's per-example eval transform; it must blank the
      records for which ``is_padding`` is True and mark them invalid.
    batch_size: examples per batch in this process.
    shard_index: this process's shard.
    shard_count: number of shards (processes).
    worker_count: grain worker processes; 0 = in this process.
    read_threads: threads reading records in each process.
    read_buffer_size: records read ahead per process.

  Returns:
    A ``grain.DataLoader`` of the transform's outputs, stacked.
  """
  per_round = batch_size * shard_count
  padded = PaddedSource(source, num_eval_batches(len(source), batch_size,
                                                 shard_count) * per_round)
  shard = grain.sharding.ShardOptions(shard_index, shard_count,
                                      drop_remainder=True)
  sampler = grain.samplers.IndexSampler(
      num_records=len(padded), shard_options=shard, shuffle=False,
      num_epochs=1)
  ops = [transform, grain.transforms.Batch(batch_size, drop_remainder=False,
                                           batch_fn=stack_batch)]
  return grain.DataLoader(
      data_source=padded, sampler=sampler, operations=ops,
      worker_count=worker_count, shard_options=shard,
      read_options=_read_options(read_threads, read_buffer_size))
