"""Reading PyTorch weight files without importing torch until needed.

Every importer of official weights (segmentation, translation, the FID
Inception) reads ``.pth``/``.pkl`` files through here: torch is an optional
dependency (``pip install -r requirements-torch.txt``), imported lazily, and
files are unpickled only as weights unless the user trusts them.
"""

from typing import Any

import numpy as np


class ConversionError(ValueError):
  """The state dict does not fit the model; the message lists every key."""


def as_numpy(value: Any) -> np.ndarray:
  """A torch tensor (no torch import needed) or array as NumPy."""
  if hasattr(value, 'detach'):
    return value.detach().cpu().numpy()
  return np.asarray(value)


def import_torch():
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        'Reading PyTorch files needs torch, an optional dependency: '
        'pip install -r requirements-torch.txt') from e
  return torch


def torch_load(path: str, allow_pickle: bool = False) -> Any:
  """``torch.load`` on CPU, weights only unless ``allow_pickle``.

  Raises:
    FileNotFoundError: no file at ``path``.
    ValueError: not a torch file, or one that needs full unpickling.
  """
  torch = import_torch()
  try:
    return torch.load(path, map_location='cpu', weights_only=not allow_pickle)
  except FileNotFoundError as e:
    raise FileNotFoundError(f'{path}: no such checkpoint file') from e
  except Exception as e:  # torch raises UnpicklingError and friends
    if allow_pickle:
      raise ValueError(f'{path}: cannot read it as a torch file: {e}') from e
    raise ValueError(
        f'{path}: torch.load(weights_only=True) refused it ({e}). If you '
        'trust the file, load it with allow_pickle=True '
        '(--torch_allow_pickle).') from e
