"""The official (heavy, 3x3) RefineNet decoder, shared by all modalities.

Names are the official attribute names so that official weights map one to
one (reference §2.4). There is no BatchNorm in the decoder, so it runs on the
modalities folded into the batch: ``(M * B, H, W, C)``.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from cen_jax.core import layers
from cen_jax.core import resize


def _conv3x3(features: int, x: jnp.ndarray, name: str, dtype: Any,
             kernels: str, use_bias: bool = False) -> jnp.ndarray:
  return layers.conv(features, 3, in_features=x.shape[-1], use_bias=use_bias,
                     dtype=dtype, kernels=kernels, name=name)(x)


class RCUBlock(nn.Module):
  """Chained residual conv units.

  The official in-place ReLU aliases the residual, so each unit computes
  ``conv_b(relu(conv_a(relu(x)))) + relu(x)``: the skip carries relu(x).
  """
  features: int
  num_blocks: int
  dtype: Any = jnp.float32
  kernels: str = 'auto'

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    for i in range(1, self.num_blocks + 1):
      skip = nn.relu(x)
      x = _conv3x3(self.features, skip, f'{i}_conv', self.dtype, self.kernels,
                   use_bias=True)
      x = _conv3x3(self.features, nn.relu(x), f'{i}_conv_relu_varout_dimred',
                   self.dtype, self.kernels)
      x = x + skip
    return x


class CRPBlock(nn.Module):
  """Chained residual pooling: 4 stages of 5x5 stride-1 max-pool + conv."""
  features: int
  num_stages: int = 4
  dtype: Any = jnp.float32
  kernels: str = 'auto'

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    top = x
    for k in range(1, self.num_stages + 1):
      top = _conv3x3(self.features,
                     layers.max_pool(top, 5, 1, self.kernels),
                     f'{k}_outvar_dimred', self.dtype, self.kernels)
      x = x + top
    return x


def _upsample_to(x: jnp.ndarray, like: jnp.ndarray) -> jnp.ndarray:
  return resize.resize_bilinear(x, like.shape[1:3], align_corners=True)


class RefineNetDecoder(nn.Module):
  """Four refinement stages from l4 (stride 32) down to stride 4 logits.

  Attributes:
    num_classes: K.
    features: widths of the l4 path and of the other paths (512, 256).
    dropout_rate: dropout on l4, l3 and the final feature in training.
    dtype: computation dtype.
    kernels: conv and pooling gradient formulation (``core.kernels``).
    heads: task heads ``((name, channels), ...)`` for a multitask decoder;
      empty (the default) is the official single classifier ``clf_conv``
      with ``num_classes`` outputs, applied to every stream.
    stream_heads: with ``heads``, the head index of every stream, in the
      order the streams are folded into the batch (stream-major).
    suffix_heads: name even a single head ``clf_conv_<name>``.
  """
  num_classes: int
  features: Sequence[int] = (512, 256)
  dropout_rate: float = 0.5
  dtype: Any = jnp.float32
  kernels: str = 'auto'
  heads: Sequence[tuple[str, int]] = ()
  stream_heads: Sequence[int] = ()
  suffix_heads: bool = False

  def _refine(self, level: jnp.ndarray, top: jnp.ndarray, g: int,
              final: bool) -> jnp.ndarray:
    f, k = self.features[1], self.kernels
    x = _conv3x3(f, level, f'p_ims1d2_outl{g}_dimred', self.dtype, k)
    x = RCUBlock(f, 2, self.dtype, k, name=f'adapt_stage{g}_b')(x)
    x = _conv3x3(f, x, f'adapt_stage{g}_b2_joint_varout_dimred', self.dtype,
                 k)
    x = nn.relu(x + top)
    x = CRPBlock(f, dtype=self.dtype, kernels=k,
                 name=f'mflow_conv_g{g}_pool')(x)
    x = RCUBlock(f, 3, self.dtype, k, name=f'mflow_conv_g{g}_b')(x)
    if not final:
      x = _conv3x3(f, x, f'mflow_conv_g{g}_b3_joint_varout_dimred',
                   self.dtype, k)
    return x

  @nn.compact
  def __call__(self, feats: Sequence[jnp.ndarray], *,
               train: bool) -> jnp.ndarray | dict[str, jnp.ndarray]:
    """Decodes l1..l4, each ``(N, h_s, w_s, C_s)``, to ``(N, h1, w1, K)``.

    With ``heads``, ``N = S * B`` (stream-major) and the result is
    ``{name: (S_t, B, h1, w1, channels)}``: each head sees only its own
    streams. One head keeps the official name ``clf_conv``; several are
    ``clf_conv_<name>``.
    """
    l1, l2, l3, l4 = feats
    drop = nn.Dropout(self.dropout_rate, deterministic=not train)
    l4, l3 = drop(l4), drop(l3)
    f0, k = self.features[0], self.kernels
    x = _conv3x3(f0, l4, 'p_ims1d2_outl1_dimred', self.dtype, k)
    x = nn.relu(RCUBlock(f0, 2, self.dtype, k, name='adapt_stage1_b')(x))
    x = CRPBlock(f0, dtype=self.dtype, kernels=k,
                 name='mflow_conv_g1_pool')(x)
    x = RCUBlock(f0, 3, self.dtype, k, name='mflow_conv_g1_b')(x)
    x = _conv3x3(self.features[1], x, 'mflow_conv_g1_b3_joint_varout_dimred',
                 self.dtype, k)
    x = self._refine(l3, _upsample_to(x, l3), 2, final=False)
    x = self._refine(l2, _upsample_to(x, l2), 3, final=False)
    x = self._refine(l1, _upsample_to(x, l1), 4, final=True)
    x = drop(x)
    if not self.heads:
      return _conv3x3(self.num_classes, x, 'clf_conv', self.dtype, k,
                      use_bias=True)
    num_streams = len(self.stream_heads)
    x = x.reshape((num_streams, -1) + x.shape[1:])
    out = {}
    for t, (name, channels) in enumerate(self.heads):
      idx = [s for s, h in enumerate(self.stream_heads) if h == t]
      xt = x if len(idx) == num_streams else x[np.array(idx)]
      official = len(self.heads) == 1 and not self.suffix_heads
      y = _conv3x3(channels, xt.reshape((-1,) + xt.shape[2:]),
                   'clf_conv' if official else f'clf_conv_{name}',
                   self.dtype, k, use_bias=True)
      out[name] = y.reshape((len(idx), -1) + y.shape[1:])
    return out
