"""Import of official PyTorch weights (yikaiw/CEN and torchvision ResNets).

Key mapping (reference §10), after stripping a ``module.`` DataParallel
prefix:

* shared convs ``<path>.module.weight`` (OIHW) -> ``<path>/kernel`` (HWIO);
* private BNs ``<path>.bn_<m>.{weight,bias,running_mean,running_var}`` ->
  row m of ``<path>/{scale,bias}`` (params) and ``<path>/{mean,var}``
  (batch_stats), ``(M, C)``; ``num_batches_tracked`` is dropped;
* ``conv1``/``bn1``/``layer*`` live under ``encoder`` (``layer1.0`` ->
  ``layer1_0``, ``downsample.0``/``.1`` -> ``downsample_conv``/``_bn``); the
  decoder's ``<block>.0.<unit>`` -> ``decoder/<block>/<unit>``; ``alpha`` is
  top level.

Only ``load_torch_checkpoint`` and ``load_torchvision_resnet`` need torch,
which is imported lazily (``pip install -r requirements-torch.txt``).
"""

import re
from typing import Any, Mapping

import flax
import jax
import numpy as np

from cen_jax.core.torch_io import ConversionError, as_numpy, torch_load

_BN_FIELDS = {
    'weight': ('params', 'scale'),
    'bias': ('params', 'bias'),
    'running_mean': ('batch_stats', 'mean'),
    'running_var': ('batch_stats', 'var'),
}
_ENCODER_TOP = re.compile(r'^(conv1|bn1|layer\d+)\b')


def _strip_prefix(key: str) -> str:
  return key[len('module.'):] if key.startswith('module.') else key


def _module_path(parts: list[str]) -> tuple[str, ...]:
  """Official module path (no ``module``/``bn_m``) -> Flax module path."""
  if not _ENCODER_TOP.match(parts[0]):
    # Decoder: drop the index of the one-element Sequential wrappers.
    return ('decoder',) + tuple(p for p in parts if p != '0')
  path = ['encoder']
  i = 0
  while i < len(parts):
    p = parts[i]
    if p.startswith('layer') and i + 1 < len(parts):
      path.append(f'{p}_{parts[i + 1]}')
      i += 2
      continue
    if p == 'downsample':
      path.append('downsample_conv' if parts[i + 1] == '0' else
                  'downsample_bn')
      i += 2
      continue
    path.append(p)
    i += 1
  return tuple(path)


def map_key(key: str) -> tuple[str, tuple[str, ...], int | None] | None:
  """Maps one official key to ``(collection, flax_path, modality)``.

  Returns None for keys that carry nothing (``num_batches_tracked``).
  ``modality`` is the row of a private BN entry, else None.
  """
  parts = _strip_prefix(key).split('.')
  if parts == ['alpha']:
    return 'params', ('alpha',), None
  *mod, field = parts
  if field == 'num_batches_tracked':
    return None
  if mod and mod[-1].startswith('bn_') and field in _BN_FIELDS:
    collection, leaf = _BN_FIELDS[field]
    return collection, _module_path(mod[:-1]) + (leaf,), int(mod[-1][3:])
  if mod and mod[-1] == 'module' and field in ('weight', 'bias'):
    leaf = 'kernel' if field == 'weight' else 'bias'
    return 'params', _module_path(mod[:-1]) + (leaf,), None
  raise ConversionError(f'Unrecognised official key {key!r}.')


def _to_flax_layout(value: np.ndarray, leaf: str) -> np.ndarray:
  if leaf == 'kernel' and value.ndim == 4:
    return np.transpose(value, (2, 3, 1, 0))  # OIHW -> HWIO
  return value


def _gather(state_dict: Mapping[str, Any], num_modalities: int):
  """Collects converted arrays by (collection, path); reports bad keys."""
  dense, private, unexpected = {}, {}, []
  for key, value in state_dict.items():
    try:
      target = map_key(key)
    except ConversionError:
      unexpected.append(key)
      continue
    if target is None:
      continue
    collection, path, modality = target
    value = np.asarray(value)
    if modality is None:
      dense[(collection, path)] = _to_flax_layout(value, path[-1])
    elif modality >= num_modalities:
      unexpected.append(key)
    else:
      private.setdefault((collection, path), {})[modality] = value
  return dense, private, unexpected


def from_torch_state_dict(state_dict: Mapping[str, Any], num_modalities: int,
                          template: Any = None) -> dict[str, Any]:
  """Converts an official CEN state dict to Flax variables.

  Args:
    state_dict: ``{key: array}`` (numpy or torch tensors), with or without
      the ``module.`` prefix.
    num_modalities: M; ``bn_0 .. bn_{M-1}`` become the rows of each BN.
    template: optional variables (or their ``jax.eval_shape``) of the target
      model; when given, every key, shape and missing entry is checked
      against it and the error lists all problems at once.

  Returns:
    ``{'params': ..., 'batch_stats': ...}`` of float32 numpy arrays.

  Raises:
    ConversionError: unknown, missing or mis-shaped keys.
  """
  state_dict = {k: as_numpy(v) for k, v in state_dict.items()}
  dense, private, unexpected = _gather(state_dict, num_modalities)
  missing = []
  for (collection, path), rows in private.items():
    absent = [m for m in range(num_modalities) if m not in rows]
    if absent:
      missing += [f'{"/".join(path)} of bn_{m}' for m in absent]
      continue
    dense[(collection, path)] = np.stack(
        [rows[m] for m in range(num_modalities)])
  flat = {(c,) + p: v.astype(np.float32) for (c, p), v in dense.items()}
  problems = [f'unexpected key: {k}' for k in unexpected]
  problems += [f'missing BN modality: {k}' for k in missing]
  if template is not None:
    problems += _check_against(flat, template)
  if problems:
    raise ConversionError(
        f'State dict does not match the model ({len(problems)} problems):\n  '
        + '\n  '.join(problems))
  return flax.traverse_util.unflatten_dict(flat)


def _check_against(flat: dict, template: Any) -> list[str]:
  want = flax.traverse_util.flatten_dict(
      {k: template[k] for k in ('params', 'batch_stats') if k in template})
  out = []
  for path, leaf in want.items():
    if path not in flat:
      out.append(f'missing: {"/".join(path)} {tuple(leaf.shape)}')
    elif tuple(flat[path].shape) != tuple(leaf.shape):
      out.append(f'mis-shaped: {"/".join(path)} has '
                 f'{tuple(flat[path].shape)}, model wants '
                 f'{tuple(leaf.shape)}')
  out += [f'unexpected: {"/".join(p)}' for p in flat if p not in want]
  return out


def load_torch_checkpoint(path: str, *, allow_pickle: bool = False
                          ) -> dict[str, np.ndarray]:
  """Reads an official ``model-best.pth.tar``; returns its state dict.

  Official checkpoints are ``{'segmenter': state_dict, 'epoch_start': int,
  'best_val': float}``; a bare state dict is accepted too.
  """
  obj = torch_load(path, allow_pickle)
  if isinstance(obj, Mapping) and 'segmenter' in obj:
    obj = obj['segmenter']
  if not isinstance(obj, Mapping):
    raise ValueError(f'{path}: expected a state dict or a dict with '
                     f"'segmenter', got {type(obj).__name__}")
  return {k: as_numpy(v) for k, v in obj.items()}


def from_torchvision_resnet(state_dict: Mapping[str, Any],
                            variables: Any) -> dict[str, Any]:
  """ImageNet initialisation of the encoder, as the official code does.

  Every shared conv gets the torchvision conv and every modality's private BN
  a copy of the same ImageNet BN (scale, bias, mean, var); ``fc`` is unused.

  Args:
    state_dict: a torchvision ResNet-50/101/152 state dict.
    variables: the model's initial variables; everything outside the encoder
      is kept.

  Returns:
    New variables (numpy leaves) with the encoder replaced.

  Raises:
    ConversionError: the ResNet does not match the model's encoder.
  """
  num_modalities = variables['params']['alpha'].shape[0]
  official = {}
  for key, value in state_dict.items():
    key = _strip_prefix(key)
    if key.startswith('fc.'):
      continue
    *mod, field = key.split('.')
    value = as_numpy(value)
    if field == 'num_batches_tracked' or (field in _BN_FIELDS and
                                          value.ndim == 1):
      for m in range(num_modalities):
        official['.'.join(mod + [f'bn_{m}', field])] = value
    else:
      official['.'.join(mod + ['module', field])] = value
  encoder_only = {
      'params': {'encoder': variables['params']['encoder']},
      'batch_stats': {'encoder': variables['batch_stats']['encoder']},
  }
  converted = from_torch_state_dict(official, num_modalities, encoder_only)
  out = jax.tree.map(np.asarray, flax.core.unfreeze(variables))
  out['params']['encoder'] = converted['params']['encoder']
  out['batch_stats']['encoder'] = converted['batch_stats']['encoder']
  return out


def load_torchvision_resnet(path: str, variables: Any) -> dict[str, Any]:
  """Reads a local torchvision ResNet ``.pth`` and applies it (see above)."""
  state_dict = torch_load(path, allow_pickle=False)
  return from_torchvision_resnet(
      {k: as_numpy(v) for k, v in state_dict.items()}, variables)


def _official_module_path(path: tuple[str, ...]) -> list[str]:
  """Inverse of ``_module_path`` for one Flax module path."""
  top, *rest = path
  if top == 'decoder':
    block, *unit = rest
    return [block, '0', *unit] if unit else [block]
  out = []
  for p in rest:
    if p.startswith('layer'):
      out += p.split('_')
    elif p.startswith('downsample_'):
      out += ['downsample', '0' if p == 'downsample_conv' else '1']
    else:
      out.append(p)
  return out


def to_torch_state_dict(variables: Any) -> dict[str, np.ndarray]:
  """Flax variables -> official key layout (no ``module.`` prefix).

  The inverse of ``from_torch_state_dict``: conv kernels back to OIHW, BN
  rows to ``bn_<m>`` entries with ``num_batches_tracked = 0``. Lets a model
  trained here be loaded by the official PyTorch code.
  """
  flat = flax.traverse_util.flatten_dict(
      jax.tree.map(np.asarray, flax.core.unfreeze(dict(variables))))
  inverse = {v: k for k, v in _BN_FIELDS.items()}
  bn_modules = {tuple(p[1:-1]) for p in flat
                if p[0] == 'params' and p[-1] == 'scale'}
  out = {}
  for (collection, *path), value in flat.items():
    if collection not in ('params', 'batch_stats'):
      continue
    if path == ['alpha']:
      out['alpha'] = value
      continue
    *module, leaf = path
    base = '.'.join(_official_module_path(tuple(module)))
    if tuple(module) in bn_modules:
      field = inverse[(collection, leaf)]
      for m in range(value.shape[0]):
        out[f'{base}.bn_{m}.{field}'] = value[m]
        out[f'{base}.bn_{m}.num_batches_tracked'] = np.zeros((), np.int64)
    else:
      field = 'weight' if leaf == 'kernel' else 'bias'
      if value.ndim == 4:
        value = np.transpose(value, (3, 2, 0, 1))  # HWIO -> OIHW
      out[f'{base}.module.{field}'] = value
  return out
