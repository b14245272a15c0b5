"""The CEN translation networks: a U-Net generator and a PatchGAN critic.

The generator is pix2pix's U-Net (reference §8.2) made a CEN: every conv and
transposed conv is shared by the M input modalities, every InstanceNorm is
private (``(M, C)`` scale, bias and running statistics), and after the
InstanceNorm of encoder blocks 2..n-1 the channels whose |gamma| is below
the exchange threshold (1e-2 officially) take the mean of the other
modalities' channel, with the same pure exchange functions as segmentation
(``cen_jax.core.exchange``). The decoder does not exchange. The M outputs
are combined by a learned softmax ensemble of their detached values.

The discriminator (§8.3) is one fully shared PatchGAN, its InstanceNorms
included, applied to ``concat(input_m, image_m)`` for every modality.

Multitask translation (the TPAMI paper's multitask scenario, this
project's reading: the paper's architecture is not available): with
``Generator(heads=(t_1, ..., t_T))`` the M inputs feed T x M *streams*,
stream ``s = t * M + m`` translating input m to target t. Every conv is
shared by all streams, every InstanceNorm is private to a stream, the
exchange runs over all T x M, and each target has its own final transposed
conv (``deconv<n>_<target>``, the task-specific head) and its own softmax
ensemble over its M streams. ``Discriminators`` holds one PatchGAN per
target. With ``heads=()`` (one target) the networks and their variables are
the official ones.

Official quirks kept: the skips carry ``LeakyReLU(0.2)(enc_k)`` (the next
block's in-place activation overwrites ``enc_k``), dropout 0.5 follows the
InstanceNorm of the first three decoder blocks, and the unused
InstanceNorms of generator conv1 / conv8 / deconv8 and discriminator conv1 /
conv5 exist as variables (``layers.UnusedNorm``) so official checkpoints
map one to one.
"""

import dataclasses
import functools
import math
import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cen_jax.core import exchange as exchange_lib
from cen_jax.core import layers

OFFICIAL_THRESHOLD = 1e-2
# Official init: conv and transposed-conv weights N(0, 0.02).
weight_init = nn.initializers.normal(0.02)


def encoder_widths(ngf: int, num_downs: int) -> tuple[int, ...]:
  """Output widths of conv1..conv<num_downs>: ngf * (1, 2, 4, 8, 8, ...)."""
  return tuple(ngf * min(2 ** k, 8) for k in range(num_downs))


def site_name(block: int) -> str:
  """The exchange site of encoder block ``block`` (1-based): ``'conv2'``."""
  return f'conv{block}'


def _conv(features: int, in_features: int, stride: int, dtype: Any,
          name: str) -> nn.Conv:
  """A shared 4x4 conv with padding 1 and bias (folds leading axes)."""
  return nn.Conv(
      features, (4, 4), strides=(stride, stride), padding=((1, 1), (1, 1)),
      dtype=dtype, param_dtype=jnp.float32, kernel_init=weight_init,
      bias_init=layers.torch_bias_init(in_features * 16), name=name)


def _deconv(features: int, dtype: Any, name: str) -> nn.ConvTranspose:
  """PyTorch's ``ConvTranspose2d(k=4, s=2, p=1)``: doubles H and W.

  The kernel is ``(4, 4, out, in)``, PyTorch's ``[in, out, kh, kw]``
  transposed, no flip (``transpose_kernel=True``).
  """
  return nn.ConvTranspose(
      features, (4, 4), strides=(2, 2), padding=((2, 2), (2, 2)),
      transpose_kernel=True, dtype=dtype, param_dtype=jnp.float32,
      kernel_init=weight_init,
      # PyTorch's fan-in of a ConvTranspose2d weight [in, out, kh, kw] is
      # out * kh * kw.
      bias_init=layers.torch_bias_init(features * 16), name=name)


class EncoderBlock(nn.Module):
  """``[LeakyReLU] -> shared conv -> [private IN -> exchange]``.

  Attributes:
    features: output width.
    site: the exchange site (``'conv2'``).
    activation: LeakyReLU(0.2) on the input (all but conv1).
    norm: private InstanceNorm and exchange (conv2..conv<n-1>).
    exchange: the exchange variant.
    norm_kwargs: ``layers.InstanceNorm`` settings.
    dtype: computation dtype.
  """
  features: int
  site: str
  activation: bool
  norm: bool
  exchange: exchange_lib.Exchange
  norm_kwargs: Any = dataclasses.field(default_factory=dict)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray,
               ctx: exchange_lib.Context) -> jnp.ndarray:
    num_modalities = x.shape[0]
    if self.activation:
      x = nn.leaky_relu(x, 0.2)
    y = _conv(self.features, x.shape[-1], 2, self.dtype, 'conv')(x)
    if not self.norm:
      layers.UnusedNorm((num_modalities, self.features), name='norm')()
      return y
    norm = layers.PrivateInstanceNorm(dtype=self.dtype, name='norm',
                                      **self.norm_kwargs)
    y = norm(y)
    if num_modalities > 1:
      if ctx.train and self.exchange.needs_rng:
        ctx = dataclasses.replace(ctx, rng=self.make_rng('exchange'))
      y = self.exchange(y, norm.variables['params']['scale'],
                        site=self.site, ctx=ctx)
    return y


class DecoderBlock(nn.Module):
  """``ReLU -> shared transposed conv -> [private IN] -> [dropout]``.

  Attributes:
    features: output width.
    norm: private InstanceNorm (all but the last block).
    dropout_rate: 0 for none.
    norm_kwargs: ``layers.InstanceNorm`` settings.
    dtype: computation dtype.
  """
  features: int
  norm: bool
  dropout_rate: float = 0.0
  norm_kwargs: Any = dataclasses.field(default_factory=dict)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, dropout: bool) -> jnp.ndarray:
    y = _deconv(self.features, self.dtype, 'deconv')(nn.relu(x))
    if self.norm:
      y = layers.PrivateInstanceNorm(dtype=self.dtype, name='norm',
                                     **self.norm_kwargs)(y)
    else:
      layers.UnusedNorm((x.shape[0], self.features), name='norm')()
    if self.dropout_rate > 0:
      y = nn.Dropout(self.dropout_rate, deterministic=not dropout)(y)
    return y


class Generator(nn.Module):
  """The CEN U-Net generator over modality-major inputs.

  Attributes:
    exchange: the exchange variant (official: ``bn_threshold`` at 1e-2).
    ngf: base width (64 officially).
    num_downs: encoder blocks; the input side must be a multiple of
      ``2 ** num_downs`` (8 officially: 256 -> 1).
    out_channels: output channels (3).
    dropout_rate: of the first ``dropout_blocks`` decoder blocks.
    dropout_blocks: 3 officially.
    norm_momentum: Flax momentum of the running statistics (PyTorch 0.1).
    norm_epsilon: InstanceNorm epsilon.
    dtype: computation dtype; outputs are float32.
    heads: target names of a multitask generator (T >= 2 of them); empty
      for the single-target network.
  """
  exchange: exchange_lib.Exchange
  ngf: int = 64
  num_downs: int = 8
  out_channels: int = 3
  dropout_rate: float = 0.5
  dropout_blocks: int = 3
  norm_momentum: float = 0.9
  norm_epsilon: float = 1e-5
  dtype: Any = jnp.float32
  heads: tuple[str, ...] = ()

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool = False,
               dropout: bool = False, use_running_average: bool = False,
               step: Any = None, progress: Any = None
               ) -> dict[str, jnp.ndarray]:
    """Translates the M inputs.

    Args:
      x: ``(M, B, H, W, C)`` inputs in [-1, 1].
      train: a training step: the InstanceNorms' running statistics move
        when ``batch_stats`` is mutable, and exchange rules get the step.
      dropout: dropout on (needs a ``'dropout'`` rng). The official code
        keeps it on in training *and* evaluation.
      use_running_average: InstanceNorms use their running statistics
        (PyTorch ``eval()``) instead of each image's own.
      step: the training step, for exchange rules that read it.
      progress: ``step / total_steps``, likewise.

    Returns:
      ``'outputs'`` ``(M, B, H, W, out_channels)`` in [-1, 1],
      ``'ensemble'`` ``(B, H, W, out_channels)`` and ``'alpha'`` ``(M,)``,
      the softmax ensemble weights. All float32. With ``heads``, a leading
      target axis: ``(T, M, B, H, W, C)``, ``(T, B, H, W, C)``, ``(T, M)``.
    """
    num_modalities = x.shape[0]
    num_targets = len(self.heads)
    if self.heads:
      # Streams s = t * M + m: every target's copy of the M inputs.
      x = jnp.tile(x, (num_targets,) + (1,) * (x.ndim - 1))
    side = 2 ** self.num_downs
    if x.shape[2] % side or x.shape[3] % side:
      raise ValueError(
          f'generator input {x.shape[2]}x{x.shape[3]}: with num_downs = '
          f'{self.num_downs} height and width must be multiples of {side}')
    norm_kwargs = dict(use_running_average=use_running_average,
                       momentum=self.norm_momentum,
                       epsilon=self.norm_epsilon)
    ctx = exchange_lib.Context(train=train, step=step, progress=progress)
    widths = encoder_widths(self.ngf, self.num_downs)
    skips = []
    y = x.astype(self.dtype)
    for k, width in enumerate(widths, start=1):
      y = EncoderBlock(
          width, site_name(k), activation=k > 1,
          norm=1 < k < self.num_downs, exchange=self.exchange,
          norm_kwargs=norm_kwargs, dtype=self.dtype, name=f'conv{k}')(y, ctx)
      self.sow('intermediates', f'conv{k}_out', y)
      skips.append(y)
    # The skips carry LeakyReLU(enc_k): the official in-place activation of
    # the next block overwrites enc_k before the decoder reads it.
    skips = [nn.leaky_relu(s, 0.2) for s in skips[:-1]]
    out_widths = widths[-2::-1] + (self.out_channels,)
    for k, width in enumerate(out_widths, start=1):
      last = k == self.num_downs
      block = functools.partial(
          DecoderBlock, width, norm=not last,
          dropout_rate=self.dropout_rate if k <= self.dropout_blocks else 0.0,
          norm_kwargs=norm_kwargs, dtype=self.dtype)
      if last and self.heads:
        # One final layer per target, on that target's M streams.
        y = jnp.stack([
            block(name=f'deconv{k}_{t}')(
                y[i * num_modalities:(i + 1) * num_modalities],
                dropout=dropout)
            for i, t in enumerate(self.heads)])
      else:
        y = block(name=f'deconv{k}')(y, dropout=dropout)
      if not last:
        y = jnp.concatenate([y, skips[-k]], axis=-1)
    y = y.astype(jnp.float32)
    self.sow('intermediates', f'deconv{self.num_downs}_out', y)
    outputs = jnp.tanh(y)
    shape = (num_targets, num_modalities) if self.heads else (num_modalities,)
    alpha = self.param('alpha', nn.initializers.ones, shape, jnp.float32)
    alpha_soft = jax.nn.softmax(alpha, axis=-1)
    # The ensemble trains only alpha: the branch outputs are detached.
    detached = jax.lax.stop_gradient(outputs)
    if self.heads:
      ensemble = jnp.stack([_ensemble(alpha_soft[t], detached[t])
                            for t in range(num_targets)])
    else:
      ensemble = _ensemble(alpha_soft, detached)
    return {'outputs': outputs, 'ensemble': ensemble, 'alpha': alpha_soft}


def _ensemble(weights: jnp.ndarray, outputs: jnp.ndarray) -> jnp.ndarray:
  """``sum_m weights[m] * outputs[m]``, accumulated in the official order."""
  ensemble = weights[0] * outputs[0]
  for m in range(1, outputs.shape[0]):
    ensemble = ensemble + weights[m] * outputs[m]
  return ensemble


class Discriminator(nn.Module):
  """The shared PatchGAN: one score map per modality, as logits.

  ``conv s2 -> [LReLU -> conv s2 -> IN] x (n_layers - 1) -> [LReLU -> conv
  s1 -> IN] -> [LReLU -> conv s1]``: 30x30 for 256x256 with 3 layers. The
  official network ends in a sigmoid; the logits are returned here so the
  losses can use the numerically stable form of the same BCE.

  Attributes:
    ndf: base width (64 officially).
    n_layers: stride-2 convs (3 officially).
    norm_momentum: Flax momentum of the InstanceNorms' running statistics.
    norm_epsilon: InstanceNorm epsilon.
    dtype: computation dtype; logits are float32.
  """
  ndf: int = 64
  n_layers: int = 3
  norm_momentum: float = 0.9
  norm_epsilon: float = 1e-5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, inputs: jnp.ndarray, images: jnp.ndarray, *,
               train: bool = False) -> jnp.ndarray:
    """Scores ``images`` as translations of ``inputs``.

    Args:
      inputs: ``(M, B, H, W, C)`` the generator's inputs.
      images: ``(M, B, H, W, 3)`` one image per modality (the generator's
        outputs), or ``(B, H, W, 3)``, the same target for every modality.
      train: running statistics of the InstanceNorms move when
        ``batch_stats`` is mutable (PyTorch's training mode; the official
        code never evaluates the discriminator otherwise).

    Returns:
      ``(M, B, h, w)`` float32 logits.
    """
    num_modalities, batch = inputs.shape[:2]
    if images.ndim == 4:
      images = jnp.broadcast_to(images, (num_modalities,) + images.shape)
    y = jnp.concatenate([inputs, images.astype(inputs.dtype)], axis=-1)
    y = y.reshape((-1,) + y.shape[2:]).astype(self.dtype)
    widths = [self.ndf * min(2 ** k, 8) for k in range(self.n_layers + 1)]
    widths.append(1)
    for k, width in enumerate(widths, start=1):
      first, last = k == 1, k == len(widths)
      stride = 2 if k <= self.n_layers else 1
      if not first:
        y = nn.leaky_relu(y, 0.2)
      y = _conv(width, y.shape[-1], stride, self.dtype, f'conv{k}_conv')(y)
      if first or last:
        layers.UnusedNorm((width,), name=f'conv{k}_norm')()
      else:
        # One shared module called once per modality in the official code:
        # its running statistics move once per modality, in order.
        y = layers.InstanceNorm(
            use_running_average=not train, momentum=self.norm_momentum,
            epsilon=self.norm_epsilon, groups=num_modalities,
            dtype=self.dtype, name=f'conv{k}_norm')(y)
    y = y.astype(jnp.float32)[..., 0]
    return y.reshape((num_modalities, batch) + y.shape[1:])


class Discriminators(nn.Module):
  """One ``Discriminator`` per target of a multitask generator.

  Attributes:
    heads: the target names (the sub-modules' names).
    ndf, n_layers, norm_momentum, norm_epsilon, dtype: as
      ``Discriminator``'s.
  """
  heads: tuple[str, ...]
  ndf: int = 64
  n_layers: int = 3
  norm_momentum: float = 0.9
  norm_epsilon: float = 1e-5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, inputs: jnp.ndarray, images: jnp.ndarray, *,
               train: bool = False) -> jnp.ndarray:
    """Scores each target's images with that target's critic.

    Args:
      inputs: ``(M, B, H, W, C)`` the generator's inputs.
      images: ``(T, M, B, H, W, 3)`` the streams' outputs, or
        ``(T, B, H, W, 3)``, each target's image for every input.
      train: as ``Discriminator``'s.

    Returns:
      ``(T, M, B, h, w)`` float32 logits.
    """
    return jnp.stack([
        Discriminator(ndf=self.ndf, n_layers=self.n_layers,
                      norm_momentum=self.norm_momentum,
                      norm_epsilon=self.norm_epsilon, dtype=self.dtype,
                      name=t)(inputs, images[i], train=train)
        for i, t in enumerate(self.heads)])


def parameter_count(params: Any) -> int:
  """Number of parameters (as PyTorch counts: every affine weight)."""
  return sum(math.prod(p.shape) for p in jax.tree.leaves(params))


def in_scales(params: Any) -> dict[str, jnp.ndarray]:
  """``{site: (M, C) IN scale}`` of the exchange sites (conv2..conv<n-1>),
  in network order."""
  blocks = sorted(int(k[len('conv'):]) for k in params
                  if re.fullmatch(r'conv\d+', k))
  return {site_name(k): params[f'conv{k}']['norm']['scale']
          for k in blocks[1:-1]}
