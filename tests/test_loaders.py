"""The task-independent grain loaders: padding, eval pass, training stream."""

import grain
import numpy as np
import pytest

from cen_jax.training import loaders

_SOURCE = [{'x': np.full((2,), i, np.int32)} for i in range(5)]


class _Eval(grain.transforms.Map):

  def map(self, element):
    if loaders.is_padding(element):
      return {'x': np.full_like(element['x'], -1), 'valid': np.bool_(False)}
    return {'x': element['x'], 'valid': np.bool_(True)}


class _Train(grain.transforms.RandomMap):

  def random_map(self, element, rng):
    return {'x': element['x'] + rng.integers(0, 1000)}


def test_padded_source_repeats_the_last_record_marked():
  padded = loaders.PaddedSource(_SOURCE, 7)
  assert len(padded) == 7
  assert [int(padded[i]['x'][0]) for i in range(7)] == [0, 1, 2, 3, 4, 4, 4]
  assert [loaders.is_padding(padded[i]) for i in range(7)] == [False] * 5 + [
      True] * 2
  assert not loaders.is_padding(_SOURCE[0])
  with pytest.raises(IndexError, match='out of range'):
    padded[7]  # pylint: disable=pointless-statement
  with pytest.raises(ValueError, match='padded length 4 < 5'):
    loaders.PaddedSource(_SOURCE, 4)


def test_num_eval_batches():
  assert loaders.num_eval_batches(5, 2) == 3
  assert loaders.num_eval_batches(5, 2, 2) == 2  # 8 >= 5 records.
  assert loaders.num_eval_batches(4, 2, 2) == 1


def test_stack_batch_rejects_mixed_sizes():
  a = {'label': np.zeros((2, 3)), 'inputs': np.zeros((1, 2, 3, 3))}
  b = {'label': np.zeros((3, 3)), 'inputs': np.zeros((1, 3, 3, 3))}
  with pytest.raises(ValueError, match="share a size, got 'label'"):
    loaders.stack_batch([a, b])
  out = loaders.stack_batch([a, a])
  assert out['inputs'].shape == (2, 1, 2, 3, 3)


def test_eval_loader_every_record_once_over_shards():
  seen, valid = [], []
  for shard in range(2):
    batches = list(loaders.eval_loader(_SOURCE, _Eval(), batch_size=2,
                                       shard_index=shard, shard_count=2))
    assert len(batches) == loaders.num_eval_batches(5, 2, 2) == 2
    for b in batches:
      seen += b['x'][:, 0].tolist()
      valid += b['valid'].tolist()
  # Shard 0 reads records 0-3, shard 1 records 4-7 (5-7 padding).
  assert seen == [0, 1, 2, 3, 4, -1, -1, -1]
  assert valid == [True] * 5 + [False] * 3


def test_train_loader_endless_seeded_and_resumable():
  def take(it, n):
    return [next(it)['x'][:, 0].tolist() for _ in range(n)]
  it = iter(loaders.train_loader(_SOURCE, _Train(), batch_size=2, seed=1))
  first = take(it, 2)
  state = it.get_state()
  rest = take(it, 4)  # Runs past the 5-record epoch.
  again = iter(loaders.train_loader(_SOURCE, _Train(), batch_size=2, seed=1))
  assert take(again, 2) == first
  resumed = iter(loaders.train_loader(_SOURCE, _Train(), batch_size=2,
                                      seed=1))
  resumed.set_state(state)
  assert take(resumed, 4) == rest
