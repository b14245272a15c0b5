"""Official translation checkpoints <-> Flax variables, for any M.

The official code saves two plain state dicts, ``checkpoint-gen*.pkl`` and
``checkpoint-dis*.pkl`` (reference §8, §10). Key mapping, after stripping a
``module.`` DataParallel prefix:

============================================  =================================
official                                      Flax
============================================  =================================
``alpha``                                     ``params/alpha``
``conv<k>.conv.module.weight`` (OIHW)         ``params/conv<k>/conv/kernel``
                                              (HWIO)
``deconv<k>.deconv.module.weight``            ``params/deconv<k>/deconv/kernel``
(``[in, out, kh, kw]``)                       (``(kh, kw, out, in)``)
``<block>.insnorm_{conv,deconv}.insnorm_<m>.  row m of ``params/<block>/norm/
{weight,bias,running_mean,running_var}``      {scale,bias}`` and
                                              ``batch_stats/<block>/norm/
                                              {mean,var}``
discriminator ``conv<k>.conv.module.*``       ``params/conv<k>_conv/*``
discriminator ``conv<k>.insnorm.module.*``    ``conv<k>_norm`` (not private)
============================================  =================================

``num_batches_tracked`` carries nothing (the official InstanceNorms use a
fixed momentum) and is written as 0 on export. torch is needed only to read
or write ``.pkl`` files and is imported lazily.
"""

import re
from typing import Any, Mapping

import flax
import jax
import numpy as np

from cen_jax.core.torch_io import ConversionError, as_numpy, torch_load

_NORM_FIELDS = {
    'weight': ('params', 'scale'),
    'bias': ('params', 'bias'),
    'running_mean': ('batch_stats', 'mean'),
    'running_var': ('batch_stats', 'var'),
}
_G_CONV = re.compile(r'^(conv|deconv)(\d+)\.(conv|deconv)\.module\.'
                     r'(weight|bias)$')
_G_NORM = re.compile(r'^(conv|deconv)(\d+)\.insnorm_(conv|deconv)\.'
                     r'insnorm_(\d+)\.(\w+)$')
_D_CONV = re.compile(r'^conv(\d+)\.conv\.module\.(weight|bias)$')
_D_NORM = re.compile(r'^conv(\d+)\.insnorm\.module\.(\w+)$')
NETWORKS = ('generator', 'discriminator')


def _strip(key: str) -> str:
  return key[len('module.'):] if key.startswith('module.') else key


def _map_generator(key: str):
  """``(collection, path, modality)`` of one generator key; None to drop."""
  if key == 'alpha':
    return 'params', ('alpha',), None
  if m := _G_CONV.fullmatch(key):
    kind, k, _, field = m.groups()
    leaf = 'kernel' if field == 'weight' else 'bias'
    return 'params', (f'{kind}{k}', kind, leaf), None
  if m := _G_NORM.fullmatch(key):
    kind, k, _, modality, field = m.groups()
    if field == 'num_batches_tracked':
      return None
    if field in _NORM_FIELDS:
      collection, leaf = _NORM_FIELDS[field]
      return collection, (f'{kind}{k}', 'norm', leaf), int(modality)
  raise ConversionError(f'unrecognised generator key {key!r}')


def _map_discriminator(key: str):
  if m := _D_CONV.fullmatch(key):
    k, field = m.groups()
    return 'params', (f'conv{k}_conv',
                      'kernel' if field == 'weight' else 'bias'), None
  if m := _D_NORM.fullmatch(key):
    k, field = m.groups()
    if field == 'num_batches_tracked':
      return None
    if field in _NORM_FIELDS:
      collection, leaf = _NORM_FIELDS[field]
      return collection, (f'conv{k}_norm', leaf), None
  raise ConversionError(f'unrecognised discriminator key {key!r}')


_MAPPERS = {'generator': _map_generator,
            'discriminator': _map_discriminator}


def from_torch_state_dict(state_dict: Mapping[str, Any], network: str,
                          template: Any) -> dict[str, Any]:
  """Converts one official network's state dict to Flax variables.

  Args:
    state_dict: ``{key: array}`` (numpy or torch tensors).
    network: ``'generator'`` or ``'discriminator'``.
    template: the network's variables (or their ``jax.eval_shape``); every
      key, shape and missing entry is checked against it, all at once.

  Returns:
    ``{'params': ..., 'batch_stats': ...}`` of float32 numpy arrays.

  Raises:
    ConversionError: unknown, missing or mis-shaped keys, listed.
  """
  mapper = _MAPPERS[network]
  dense, rows, problems = {}, {}, []
  for key, value in state_dict.items():
    try:
      target = mapper(_strip(key))
    except ConversionError as e:
      problems.append(str(e))
      continue
    if target is None:
      continue
    collection, path, modality = target
    value = as_numpy(value).astype(np.float32)
    if path[-1] == 'kernel':
      value = np.transpose(value, (2, 3, 1, 0))
    if modality is None:
      dense[(collection,) + path] = value
    else:
      rows.setdefault((collection,) + path, {})[modality] = value
  want = flax.traverse_util.flatten_dict(
      {k: template[k] for k in ('params', 'batch_stats')})
  for path, by_modality in rows.items():
    count = want[path].shape[0] if path in want else len(by_modality)
    absent = [m for m in range(count) if m not in by_modality]
    extra = [m for m in by_modality if m >= count]
    problems += [f'missing modality {m} of {"/".join(path)}' for m in absent]
    problems += [f'modality {m} of {"/".join(path)} beyond the model\'s '
                 f'{count}' for m in extra]
    if not absent and not extra:
      dense[path] = np.stack([by_modality[m] for m in range(count)])
  for path, leaf in want.items():
    if path not in dense:
      problems.append(f'missing: {"/".join(path)} {tuple(leaf.shape)}')
    elif dense[path].shape != tuple(leaf.shape):
      problems.append(f'mis-shaped: {"/".join(path)} has '
                      f'{dense[path].shape}, the model wants '
                      f'{tuple(leaf.shape)}')
  problems += [f'unexpected: {"/".join(p)}' for p in dense if p not in want]
  if problems:
    raise ConversionError(
        f'{network} state dict does not match the model ({len(problems)} '
        'problems):\n  ' + '\n  '.join(problems))
  return flax.traverse_util.unflatten_dict(dense)


def to_torch_state_dict(variables: Any, network: str
                        ) -> dict[str, np.ndarray]:
  """One network's Flax variables -> the official key layout.

  The inverse of :func:`from_torch_state_dict`, with
  ``num_batches_tracked = 0`` for every norm.
  """
  flat = flax.traverse_util.flatten_dict(
      jax.tree.map(np.asarray, flax.core.unfreeze(dict(variables))))
  inverse = {v: k for k, v in _NORM_FIELDS.items()}
  out = {}
  for (collection, *path), value in flat.items():
    if collection not in ('params', 'batch_stats'):
      continue
    if path == ['alpha']:
      out['alpha'] = value
      continue
    if path[-1] == 'kernel':
      value = np.transpose(value, (3, 2, 0, 1))
    if network == 'discriminator':
      block, kind = path[0].split('_')
      if kind == 'conv':
        field = 'weight' if path[-1] == 'kernel' else 'bias'
        out[f'{block}.conv.module.{field}'] = value
      else:
        base = f'{block}.insnorm.module'
        out[f'{base}.{inverse[(collection, path[-1])]}'] = value
        out[f'{base}.num_batches_tracked'] = np.zeros((), np.int64)
      continue
    block, kind, leaf = path
    base_kind = 'deconv' if block.startswith('deconv') else 'conv'
    if kind != 'norm':
      field = 'weight' if leaf == 'kernel' else 'bias'
      out[f'{block}.{base_kind}.module.{field}'] = value
      continue
    for m in range(value.shape[0]):
      base = f'{block}.insnorm_{base_kind}.insnorm_{m}'
      out[f'{base}.{inverse[(collection, leaf)]}'] = value[m]
      out[f'{base}.num_batches_tracked'] = np.zeros((), np.int64)
  return out


def load_torch_state_dict(path: str, *, allow_pickle: bool = False
                          ) -> dict[str, np.ndarray]:
  """Reads an official ``checkpoint-{gen,dis}*.pkl`` (a plain state dict)."""
  obj = torch_load(path, allow_pickle)
  if not isinstance(obj, Mapping):
    raise ValueError(f'{path}: expected a state dict, got '
                     f'{type(obj).__name__}')
  return {k: as_numpy(v) for k, v in obj.items()}
