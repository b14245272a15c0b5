"""The Inception-v3 that pytorch-fid (and the official CEN code) uses for FID.

This is not torchvision's Inception-v3: it is the TensorFlow FID graph
(``inception-2015-12-05``) as pytorch-fid ports it, with four patched blocks:

* ``Mixed_5b..5d`` (``FIDInceptionA``) and ``Mixed_6b..6e``
  (``FIDInceptionC``) average-pool their pool branch without counting the
  zero padding (TensorFlow's ``avg_pool``);
* ``Mixed_7b`` (``FIDInceptionE_1``) does the same;
* ``Mixed_7c`` (``FIDInceptionE_2``) max-pools its pool branch.

Every conv is bias-free and followed by BatchNorm with eps 0.001 and a ReLU.
The module takes NHWC images in [0, 1], resizes them to 299 x 299 exactly as
``F.interpolate(mode='bilinear', align_corners=False)`` (no antialiasing,
also when shrinking), maps them to [-1, 1] and returns the 2048-d pool3
features: the global average after ``Mixed_7c``.

Layer names are pytorch-fid's, so its state dict maps key by key:
``Mixed_5b.branch5x5_1.conv.weight`` (OIHW) ->
``params/Mixed_5b/branch5x5_1/conv/kernel`` (HWIO) and ``...bn.weight``,
``bias``, ``running_mean``, ``running_var`` -> ``params/.../bn/scale``,
``bias``, ``batch_stats/.../bn/mean``, ``var``. ``fc`` (the 1008 logits) and
``num_batches_tracked`` are not needed for pool3 and are dropped.

The weights are not bundled and never downloaded: ``load_torch_weights``
reads the user's copy of pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth``
(torch is imported only there).
"""

import functools
import os
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cen_jax.core import resize
from cen_jax.core.torch_io import ConversionError, as_numpy, torch_load

WEIGHTS_FILE = 'pt_inception-2015-12-05-6726825d.pth'
WEIGHTS_URL = ('https://github.com/mseitzer/pytorch-fid/releases/download/'
               'fid_weights/' + WEIGHTS_FILE)
INPUT_SIZE = 299
FEATURES = 2048

_BN_FIELDS = {
    'weight': ('params', 'scale'),
    'bias': ('params', 'bias'),
    'running_mean': ('batch_stats', 'mean'),
    'running_var': ('batch_stats', 'var'),
}


class BasicConv2d(nn.Module):
  """Bias-free conv, BatchNorm (eps 0.001, running statistics) and ReLU.

  Attributes:
    features: output channels.
    kernel: ``(kh, kw)``.
    strides: the same stride on both axes.
    padding: ``(ph, pw)`` zeros on each side, as PyTorch's ``padding``.
    precision: the conv's ``lax`` precision.
  """
  features: int
  kernel: tuple[int, int] = (1, 1)
  strides: int = 1
  padding: tuple[int, int] = (0, 0)
  precision: Any = 'highest'

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    ph, pw = self.padding
    x = nn.Conv(self.features, self.kernel, strides=self.strides,
                padding=((ph, ph), (pw, pw)), use_bias=False,
                precision=self.precision, name='conv')(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name='bn')(x)
    return nn.relu(x)


def _avg_pool_3x3(x: jnp.ndarray) -> jnp.ndarray:
  """TensorFlow's same-padded 3x3 average: the padding is not counted."""
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)),
                     count_include_pad=False)


def _max_pool_3x3(x: jnp.ndarray, stride: int) -> jnp.ndarray:
  """3x3 max-pool; stride 1 pads by one (with -inf), stride 2 does not."""
  pad = 1 if stride == 1 else 0
  return nn.max_pool(x, (3, 3), strides=(stride, stride),
                     padding=((pad, pad), (pad, pad)))


class InceptionA(nn.Module):
  """pytorch-fid's ``FIDInceptionA`` (``Mixed_5b..5d``)."""
  pool_features: int
  precision: Any = 'highest'

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    conv = functools.partial(BasicConv2d, precision=self.precision)
    b1 = conv(64, name='branch1x1')(x)
    b5 = conv(48, name='branch5x5_1')(x)
    b5 = conv(64, (5, 5), padding=(2, 2), name='branch5x5_2')(b5)
    b3 = conv(64, name='branch3x3dbl_1')(x)
    b3 = conv(96, (3, 3), padding=(1, 1), name='branch3x3dbl_2')(b3)
    b3 = conv(96, (3, 3), padding=(1, 1), name='branch3x3dbl_3')(b3)
    bp = conv(self.pool_features, name='branch_pool')(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
  """torchvision's ``InceptionB`` (``Mixed_6a``): the 35 -> 17 reduction."""
  precision: Any = 'highest'

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    conv = functools.partial(BasicConv2d, precision=self.precision)
    b3 = conv(384, (3, 3), strides=2, name='branch3x3')(x)
    bd = conv(64, name='branch3x3dbl_1')(x)
    bd = conv(96, (3, 3), padding=(1, 1), name='branch3x3dbl_2')(bd)
    bd = conv(96, (3, 3), strides=2, name='branch3x3dbl_3')(bd)
    return jnp.concatenate([b3, bd, _max_pool_3x3(x, 2)], axis=-1)


class InceptionC(nn.Module):
  """pytorch-fid's ``FIDInceptionC`` (``Mixed_6b..6e``)."""
  channels_7x7: int
  precision: Any = 'highest'

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    conv = functools.partial(BasicConv2d, precision=self.precision)
    c7 = self.channels_7x7
    row = dict(kernel=(1, 7), padding=(0, 3))
    col = dict(kernel=(7, 1), padding=(3, 0))
    b1 = conv(192, name='branch1x1')(x)
    b7 = conv(c7, name='branch7x7_1')(x)
    b7 = conv(c7, **row, name='branch7x7_2')(b7)
    b7 = conv(192, **col, name='branch7x7_3')(b7)
    bd = conv(c7, name='branch7x7dbl_1')(x)
    bd = conv(c7, **col, name='branch7x7dbl_2')(bd)
    bd = conv(c7, **row, name='branch7x7dbl_3')(bd)
    bd = conv(c7, **col, name='branch7x7dbl_4')(bd)
    bd = conv(192, **row, name='branch7x7dbl_5')(bd)
    bp = conv(192, name='branch_pool')(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
  """torchvision's ``InceptionD`` (``Mixed_7a``): the 17 -> 8 reduction."""
  precision: Any = 'highest'

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    conv = functools.partial(BasicConv2d, precision=self.precision)
    b3 = conv(192, name='branch3x3_1')(x)
    b3 = conv(320, (3, 3), strides=2, name='branch3x3_2')(b3)
    b7 = conv(192, name='branch7x7x3_1')(x)
    b7 = conv(192, (1, 7), padding=(0, 3), name='branch7x7x3_2')(b7)
    b7 = conv(192, (7, 1), padding=(3, 0), name='branch7x7x3_3')(b7)
    b7 = conv(192, (3, 3), strides=2, name='branch7x7x3_4')(b7)
    return jnp.concatenate([b3, b7, _max_pool_3x3(x, 2)], axis=-1)


class InceptionE(nn.Module):
  """pytorch-fid's ``FIDInceptionE_1`` (``Mixed_7b``) or ``_2`` (``7c``).

  Attributes:
    max_pool_branch: ``FIDInceptionE_2``: the pool branch max-pools (a quirk
      of the TensorFlow graph) instead of averaging without the padding.
    precision: the convs' ``lax`` precision.
  """
  max_pool_branch: bool = False
  precision: Any = 'highest'

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    conv = functools.partial(BasicConv2d, precision=self.precision)
    row = dict(kernel=(1, 3), padding=(0, 1))
    col = dict(kernel=(3, 1), padding=(1, 0))
    b1 = conv(320, name='branch1x1')(x)
    b3 = conv(384, name='branch3x3_1')(x)
    b3 = jnp.concatenate([conv(384, **row, name='branch3x3_2a')(b3),
                          conv(384, **col, name='branch3x3_2b')(b3)], -1)
    bd = conv(448, name='branch3x3dbl_1')(x)
    bd = conv(384, (3, 3), padding=(1, 1), name='branch3x3dbl_2')(bd)
    bd = jnp.concatenate([conv(384, **row, name='branch3x3dbl_3a')(bd),
                          conv(384, **col, name='branch3x3dbl_3b')(bd)], -1)
    pooled = (_max_pool_3x3(x, 1) if self.max_pool_branch
              else _avg_pool_3x3(x))
    bp = conv(192, name='branch_pool')(pooled)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionV3(nn.Module):
  """pytorch-fid's ``InceptionV3([3])``: images -> 2048-d pool3 features.

  Attributes:
    resize_input: resize to 299 x 299 first (pytorch-fid's default), with
      PyTorch's bilinear ``align_corners=False`` arithmetic.
    normalize_input: map [0, 1] to [-1, 1] (pytorch-fid's default).
    precision: the convs' ``lax`` precision. ``'highest'`` keeps float32
      arithmetic on accelerators, whose default passes (bf16/TF32) would move
      the features and so the FID.
  """
  resize_input: bool = True
  normalize_input: bool = True
  precision: Any = 'highest'

  @nn.compact
  def __call__(self, images: jnp.ndarray) -> jnp.ndarray:
    """Pool3 features.

    Args:
      images: ``(N, H, W, 3)`` in [0, 1] (RGB, as pytorch-fid reads PNGs).

    Returns:
      ``(N, 2048)`` float32.
    """
    x = images.astype(jnp.float32)
    if self.resize_input:
      x = resize.resize_bilinear(x, (INPUT_SIZE, INPUT_SIZE),
                                 align_corners=False)
    if self.normalize_input:
      x = 2 * x - 1
    p = dict(precision=self.precision)
    x = BasicConv2d(32, (3, 3), strides=2, **p, name='Conv2d_1a_3x3')(x)
    x = BasicConv2d(32, (3, 3), **p, name='Conv2d_2a_3x3')(x)
    x = BasicConv2d(64, (3, 3), padding=(1, 1), **p,
                    name='Conv2d_2b_3x3')(x)
    x = _max_pool_3x3(x, 2)
    x = BasicConv2d(80, **p, name='Conv2d_3b_1x1')(x)
    x = BasicConv2d(192, (3, 3), **p, name='Conv2d_4a_3x3')(x)
    x = _max_pool_3x3(x, 2)
    x = InceptionA(32, **p, name='Mixed_5b')(x)
    x = InceptionA(64, **p, name='Mixed_5c')(x)
    x = InceptionA(64, **p, name='Mixed_5d')(x)
    x = InceptionB(**p, name='Mixed_6a')(x)
    for name, c7 in (('6b', 128), ('6c', 160), ('6d', 160), ('6e', 192)):
      x = InceptionC(c7, **p, name=f'Mixed_{name}')(x)
    x = InceptionD(**p, name='Mixed_7a')(x)
    x = InceptionE(False, **p, name='Mixed_7b')(x)
    x = InceptionE(True, **p, name='Mixed_7c')(x)
    return jnp.mean(x, axis=(1, 2))


def variable_shapes(model: InceptionV3 | None = None) -> Any:
  """The model's ``{'params', 'batch_stats'}`` as ``ShapeDtypeStruct``s."""
  model = model or InceptionV3()
  x = jax.ShapeDtypeStruct((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32)
  return jax.eval_shape(model.init, jax.random.key(0), x)


def _map_key(key: str) -> tuple[str, ...] | None:
  """pytorch-fid key -> ``(collection, *flax_path)``; None if unused."""
  *mod, field = key.split('.')
  if (mod and mod[0] == 'fc') or field == 'num_batches_tracked':
    return None
  if mod and mod[-1] == 'bn' and field in _BN_FIELDS:
    collection, leaf = _BN_FIELDS[field]
    return (collection, *mod, leaf)
  if mod and mod[-1] == 'conv' and field == 'weight':
    return ('params', *mod, 'kernel')
  return ('unknown', key)


def from_torch_state_dict(state_dict: dict[str, Any],
                          source: str = 'state dict') -> dict[str, Any]:
  """pytorch-fid's Inception state dict -> ``{'params', 'batch_stats'}``.

  Args:
    state_dict: ``{key: tensor or array}`` as pytorch-fid's
      ``fid_inception_v3().state_dict()`` (``fc`` may be present).
    source: what to call it in errors (the file name).

  Returns:
    Nested dicts of float32 NumPy arrays; conv kernels HWIO.

  Raises:
    ConversionError: keys or shapes that do not match the model; the first
      few are listed.
  """
  flat = {}
  for key, value in state_dict.items():
    path = _map_key(key)
    if path is None:
      continue
    value = as_numpy(value).astype(np.float32)
    if path[-1] == 'kernel' and value.ndim == 4:
      value = np.transpose(value, (2, 3, 1, 0))  # OIHW -> HWIO
    flat[path] = (key, value)
  want = flax.traverse_util.flatten_dict(variable_shapes())
  problems = []
  for path, leaf in want.items():
    if path not in flat:
      problems.append(f'missing {"/".join(path)} {tuple(leaf.shape)}')
    elif flat[path][1].shape != tuple(leaf.shape):
      key, value = flat[path]
      problems.append(f'{key} has shape {value.shape}, the model wants '
                      f'{tuple(leaf.shape)} ({"/".join(path)})')
  problems += [f'unexpected key {k}' for p, (k, _) in flat.items()
               if p not in want]
  if problems:
    shown = problems[:8]
    more = len(problems) - len(shown)
    raise ConversionError(
        f"{source} is not pytorch-fid's FID Inception ({WEIGHTS_FILE}); "
        f'{len(problems)} mismatches, first:\n  ' + '\n  '.join(shown)
        + (f'\n  ... and {more} more' if more else ''))
  return flax.traverse_util.unflatten_dict(
      {p: v for p, (_, v) in flat.items()})


def load_torch_weights(path: str) -> dict[str, Any]:
  """Reads pytorch-fid's Inception weights file; returns Flax variables.

  Args:
    path: the local ``pt_inception-2015-12-05-6726825d.pth`` (a plain state
      dict, read with ``torch.load(weights_only=True)``).

  Returns:
    ``{'params': ..., 'batch_stats': ...}`` of float32 NumPy arrays.

  Raises:
    FileNotFoundError: no file at ``path``; the message says where to get it.
    ConversionError: a file with other keys or shapes.
  """
  path = os.path.expanduser(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f'{path}: no such file. FID/KID need the Inception-v3 weights of '
        f'pytorch-fid ({WEIGHTS_FILE}, the TensorFlow FID network ported to '
        f'PyTorch). Nothing is downloaded for you: fetch it from '
        f'{WEIGHTS_URL}, put it on this machine and point '
        'config.eval.inception_weights at it '
        '(--config.eval.inception_weights=/path/to/' + WEIGHTS_FILE + ').')
  state_dict = torch_load(path)
  if not isinstance(state_dict, dict):
    raise ConversionError(f'{path}: expected a state dict, got '
                          f'{type(state_dict).__name__}')
  return from_torch_state_dict(state_dict, source=path)
