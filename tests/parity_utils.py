"""Loads the official-model parity fixtures from ../shared/parity."""

import functools
import importlib.util

import numpy as np

from tests import paths


@functools.lru_cache(maxsize=1)
def deterministic_weights():
  """The fixture's weight generator, imported from its file."""
  spec = importlib.util.spec_from_file_location(
      'deterministic_weights', paths.PARITY / 'deterministic_weights.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def official_state_dict(depth: int, seed: int) -> dict[str, np.ndarray]:
  dw = deterministic_weights()
  keys = dw.read_key_list(str(paths.PARITY / f'keys_resnet{depth}.tsv'))
  return dw.make_state_dict(keys, seed)


def key_shapes(depth: int) -> dict[str, tuple[int, ...]]:
  dw = deterministic_weights()
  keys = dw.read_key_list(str(paths.PARITY / f'keys_resnet{depth}.tsv'))
  return {k: tuple(s) for k, s, *_ in keys}


def load_fixture(name: str = 'fixture_r50_seed0.npz') -> dict[str, np.ndarray]:
  with np.load(paths.PARITY / name) as z:
    return {k: z[k] for k in z.files}


def nhwc(x: np.ndarray) -> np.ndarray:
  return x.transpose(0, 2, 3, 1)
