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

from cen_jax.core import kernels as kernels_lib

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
         kernels: str = 'auto', name: str | None = None) -> nn.Conv:
  """A shared ``kernel x kernel`` conv with PyTorch's padding and init.

  Padding is ``kernel // 2`` on each side, as every conv in the official
  model uses, so stride-2 layers ceil-divide the size like PyTorch.
  ``kernels`` picks how its weight gradient is computed
  (``cen_jax.core.kernels``); the parameters and the forward pass are the
  same either way.
  """
  pad = kernel // 2
  return nn.Conv(
      features, (kernel, kernel), strides=(stride, stride),
      padding=((pad, pad), (pad, pad)), use_bias=use_bias, dtype=dtype,
      param_dtype=jnp.float32, kernel_init=torch_kernel_init,
      bias_init=torch_bias_init(in_features * kernel * kernel),
      conv_general_dilated=kernels_lib.conv_general_dilated(kernels),
      name=name)


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


def max_pool(x: jnp.ndarray, window: int, stride: int,
             kernels: str = 'auto') -> jnp.ndarray:
  """Max-pool of ``(N, H, W, C)`` with PyTorch's -inf padding of window//2.

  ``kernels`` picks the formulation (``cen_jax.core.kernels.max_pool``);
  values and gradients are identical either way.
  """
  return kernels_lib.max_pool(x, window, stride, kernels)


class InstanceNorm(nn.Module):
  """PyTorch's ``InstanceNorm2d(affine=True, track_running_stats=True)``.

  Normalises every image of ``(N, H, W, C)`` over its own ``H, W`` (biased
  variance), or with the running statistics when ``use_running_average``.
  Where ``batch_stats`` is mutable and per-image statistics are used, the
  running averages move as PyTorch moves them: towards the batch mean of
  the per-image means and of the *unbiased* per-image variances.

  Attributes:
    use_running_average: normalise with the stored statistics (PyTorch's
      ``eval()``) instead of each image's own.
    momentum: Flax convention: ``new = momentum * old + (1 - momentum) *
      batch`` (PyTorch's default 0.1 is 0.9 here).
    epsilon: added to the variance.
    groups: the running update is applied once per group of ``N // groups``
      images, in order, as PyTorch does when one shared module is called
      once per modality (the discriminator); 1 = one update.
    dtype: computation dtype; statistics are computed in float32.
  """
  use_running_average: bool = False
  momentum: float = 0.9
  epsilon: float = 1e-5
  groups: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    features = x.shape[-1]
    scale = self.param('scale', nn.initializers.ones, (features,),
                       jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (features,),
                      jnp.float32)
    ra_mean = self.variable('batch_stats', 'mean', jnp.zeros, (features,),
                            jnp.float32)
    ra_var = self.variable('batch_stats', 'var', jnp.ones, (features,),
                           jnp.float32)
    xf = x.astype(jnp.float32)
    if self.use_running_average:
      mean, var = ra_mean.value, ra_var.value
    else:
      mean = jnp.mean(xf, axis=(-3, -2), keepdims=True)
      var = jnp.mean(jnp.square(xf - mean), axis=(-3, -2), keepdims=True)
      if (not self.is_initializing()
          and self.is_mutable_collection('batch_stats')):
        self._update_running(ra_mean, ra_var, mean, var,
                             x.shape[-3] * x.shape[-2])
    y = (xf - mean) * jax.lax.rsqrt(var + self.epsilon) * scale + bias
    return y.astype(self.dtype)

  def _update_running(self, ra_mean, ra_var, mean, var, count):
    unbiased = var * (count / max(count - 1, 1))
    mean = mean.reshape((self.groups, -1, mean.shape[-1]))
    unbiased = unbiased.reshape((self.groups, -1, mean.shape[-1]))
    m, v = ra_mean.value, ra_var.value
    for g in range(self.groups):
      m = self.momentum * m + (1 - self.momentum) * jnp.mean(mean[g], 0)
      v = self.momentum * v + (1 - self.momentum) * jnp.mean(unbiased[g], 0)
    ra_mean.value, ra_var.value = m, v


PrivateInstanceNorm = nn.vmap(
    InstanceNorm,
    in_axes=0,
    out_axes=0,
    variable_axes={'params': 0, 'batch_stats': 0},
    split_rngs={'params': True},
)
"""InstanceNorm with its own scale/bias/running stats per modality, ``(M, C)``
each; input ``(M, B, H, W, C)``."""


class UnusedNorm(nn.Module):
  """The variables of a norm layer that the forward never calls.

  The official translation networks own InstanceNorm modules they never use
  (generator conv1, conv8, deconv8; discriminator conv1, conv5). They are in
  its checkpoints, and the official L1 term covers the generator's encoder
  ones, so they are kept here with the same shapes (``shape`` is ``(C,)`` or
  ``(M, C)``) and no computation.
  """
  shape: tuple[int, ...]

  @nn.compact
  def __call__(self) -> None:
    self.param('scale', nn.initializers.ones, self.shape, jnp.float32)
    self.param('bias', nn.initializers.zeros, self.shape, jnp.float32)
    self.variable('batch_stats', 'mean', jnp.zeros, self.shape, jnp.float32)
    self.variable('batch_stats', 'var', jnp.ones, self.shape, jnp.float32)
