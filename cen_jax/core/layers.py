"""The two lifted layer types CEN is made of, plus PyTorch-default inits.

Activations carry the modality axis first: ``(M, B, H, W, C)``.

* A *shared* convolution is one ``nn.Conv`` applied to every modality: Flax's
  ``nn.Conv`` folds all leading axes into the batch, so ``(M, B)`` become one
  batch of ``M * B`` images and a single kernel serves all modalities.
* A *private* BatchNorm is ``nn.BatchNorm`` lifted with ``nn.vmap`` over the
  modality axis: scale, bias, mean and var have shape ``(M, C)`` and every
  modality is normalised with its own statistics.
"""

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# PyTorch's default Conv2d init: kaiming_uniform(a=sqrt(5)) for the kernel,
# i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and the same bound for the bias.
torch_kernel_init = nn.initializers.variance_scaling(
    1.0 / 3.0, 'fan_in', 'uniform')


def torch_bias_init(fan_in: int) -> nn.initializers.Initializer:
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def conv(features: int, kernel: int, *, in_features: int, stride: int = 1,
         use_bias: bool = False, dtype: Any = jnp.float32,
         name: str | None = None) -> nn.Conv:
  """A shared ``kernel x kernel`` conv with PyTorch's padding and init.

  Padding is ``kernel // 2`` on each side, as every conv in the official
  model uses, so stride-2 layers ceil-divide the size like PyTorch.
  """
  pad = kernel // 2
  return nn.Conv(
      features, (kernel, kernel), strides=(stride, stride),
      padding=((pad, pad), (pad, pad)), use_bias=use_bias, dtype=dtype,
      param_dtype=jnp.float32, kernel_init=torch_kernel_init,
      bias_init=torch_bias_init(in_features * kernel * kernel), name=name)


PrivateBatchNorm = nn.vmap(
    nn.BatchNorm,
    in_axes=0,
    out_axes=0,
    variable_axes={'params': 0, 'batch_stats': 0},
    split_rngs={'params': True},
)
"""BatchNorm with its own scale/bias/mean/var per modality, ``(M, C)`` each."""


def private_norm(*, use_running_average: bool, momentum: float,
                 epsilon: float, dtype: Any) -> functools.partial:
  """A factory for private BNs with the model's shared settings."""
  return functools.partial(
      PrivateBatchNorm, use_running_average=use_running_average,
      momentum=momentum, epsilon=epsilon, dtype=dtype,
      param_dtype=jnp.float32)


def max_pool(x: jnp.ndarray, window: int, stride: int) -> jnp.ndarray:
  """Max-pool of ``(N, H, W, C)`` with PyTorch's -inf padding of window//2."""
  pad = window // 2
  return nn.max_pool(x, (window, window), strides=(stride, stride),
                     padding=((pad, pad), (pad, pad)))
