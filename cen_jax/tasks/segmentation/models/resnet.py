"""ResNet v1.5 encoder with shared convs, private BNs and bn2 channel exchange.

The torchvision layout the official code uses: Bottleneck blocks with the
stride on the 3x3 conv, a downsample branch in block 0 of every stage, and
(the CEN part) a channel exchange after every bn2, before its ReLU, in
training and evaluation alike (reference §2.2-2.3).
"""

import dataclasses
import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from cen_jax.core import exchange as exchange_lib
from cen_jax.core import kernels as kernels_lib
from cen_jax.core import layers

STAGE_SIZES = {
    'tiny': (1, 1, 1, 1),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}
EXPANSION = 4


def site_name(stage: int, block: int) -> str:
  """The official name of a block, ``'layer1.0'``: the exchange site."""
  return f'layer{stage}.{block}'


def module_name(stage: int, block: int) -> str:
  """Flax name of a block (Flax names cannot contain dots)."""
  return f'layer{stage}_{block}'


class Bottleneck(nn.Module):
  """torchvision Bottleneck over ``(M, B, H, W, C)`` with bn2 exchange.

  Attributes:
    planes: width of the 1x1 and 3x3 convs; the output has 4x as many.
    stride: stride of the 3x3 conv (v1.5) and of the downsample conv.
    downsample: whether the residual goes through conv 1x1 + private BN.
    site: the exchange site's name, e.g. ``'layer1.0'``.
    exchange: the ``cen_jax.core.exchange.Exchange`` applied after bn2.
    norm: private BatchNorm factory.
    dtype: computation dtype of the convs.
    kernels: conv and pooling gradient formulation (``core.kernels``).
  """
  planes: int
  stride: int
  downsample: bool
  site: str
  exchange: exchange_lib.Exchange
  norm: Callable[..., nn.Module]
  dtype: Any = jnp.float32
  kernels: str = 'auto'

  @nn.compact
  def __call__(self, x: jnp.ndarray,
               ctx: exchange_lib.Context | None = None) -> jnp.ndarray:
    cin = x.shape[-1]
    out = self.planes * EXPANSION
    conv = functools.partial(layers.conv, dtype=self.dtype,
                             kernels=self.kernels)
    y = conv(self.planes, 1, in_features=cin, name='conv1')(x)
    y = nn.relu(self.norm(name='bn1')(y))
    y = conv(self.planes, 3, in_features=self.planes, stride=self.stride,
             name='conv2')(y)
    bn2 = self.norm(name='bn2')
    y = bn2(y)
    self.sow('intermediates', 'bn2_out', y)
    if ctx is not None and ctx.train and self.exchange.needs_rng:
      # A key per step (the stream's root is the step's) and per site (the
      # module path).
      ctx = dataclasses.replace(ctx, rng=self.make_rng('exchange'))
    with jax.named_scope('exchange'):
      y = self.exchange(y, bn2.variables['params']['scale'], site=self.site,
                        ctx=ctx)
    self.sow('intermediates', 'bn2_exchanged', y)
    y = nn.relu(y)
    y = conv(out, 1, in_features=self.planes, name='conv3')(y)
    y = self.norm(name='bn3')(y)
    if self.downsample:
      x = conv(out, 1, in_features=cin, stride=self.stride,
               name='downsample_conv')(x)
      x = self.norm(name='downsample_bn')(x)
    return kernels_lib.add_relu(y, x, self.kernels)


class ResNetEncoder(nn.Module):
  """Stem and four stages; returns the stage outputs l1..l4.

  Attributes:
    stage_sizes: blocks per stage, e.g. ``(3, 4, 23, 3)`` for ResNet-101.
    exchange: the exchange variant applied after every bn2.
    norm: private BatchNorm factory (decides frozen or batch statistics).
    width: stem width and planes of stage 1 (64 in every official model).
    dtype: computation dtype of the convs.
    kernels: conv and pooling gradient formulation (``core.kernels``).
    remat: recompute every Bottleneck's activations in the backward pass
      instead of keeping them (``nn.remat``): less memory, one more forward
      of the encoder; same numbers.
  """
  stage_sizes: Sequence[int]
  exchange: exchange_lib.Exchange
  norm: Callable[..., nn.Module]
  width: int = 64
  dtype: Any = jnp.float32
  kernels: str = 'auto'
  remat: bool = False

  @nn.compact
  def __call__(self, x: jnp.ndarray,
               ctx: exchange_lib.Context | None = None) -> list[jnp.ndarray]:
    """Encodes ``(M, B, H, W, 3)`` into four ``(M, B, h_s, w_s, C_s)``.

    ``ctx`` is handed to the exchange at every bn2.
    """
    x = layers.conv(self.width, 7, in_features=x.shape[-1], stride=2,
                    dtype=self.dtype, kernels=self.kernels, name='conv1')(x)
    x = nn.relu(self.norm(name='bn1')(x))
    lead = x.shape[:2]
    x = layers.max_pool(x.reshape((-1,) + x.shape[2:]), 3, 2, self.kernels)
    x = x.reshape(lead + x.shape[1:])
    self.sow('intermediates', 'stem', x)
    features = []
    block = nn.remat(Bottleneck) if self.remat else Bottleneck
    for s, num_blocks in enumerate(self.stage_sizes):
      for i in range(num_blocks):
        x = block(
            planes=self.width * 2**s,
            stride=2 if (s > 0 and i == 0) else 1,
            downsample=i == 0,
            site=site_name(s + 1, i),
            exchange=self.exchange,
            norm=self.norm,
            dtype=self.dtype,
            kernels=self.kernels,
            name=module_name(s + 1, i))(x, ctx)
      self.sow('intermediates', f'l{s + 1}', x)
      features.append(x)
    return features
