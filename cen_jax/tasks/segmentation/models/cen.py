"""The CEN dense-prediction network: shared ResNet + RefineNet, private BNs.

``CEN`` maps modality-major inputs ``(M, B, H, W, 3)`` to per-modality logits
at 1/4 resolution and their learned softmax ensemble (reference §2.5).

The same network is the *stream core* of the multitask scenarios
(``cen_jax.tasks.multitask``): the leading axis then holds S streams, each an
(input modality, task) pair; every conv is shared, every BN private to its
stream, the exchange runs over all S, and ``heads`` adds one final conv per
task, applied to that task's streams only, with a softmax ensemble per task.
Multimodal segmentation is the case "M streams, one head" and keeps the
official parameter names (``decoder/clf_conv``, ``alpha``).
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from cen_jax.core import exchange as exchange_lib
from cen_jax.core import layers
from cen_jax.tasks.segmentation.models import refinenet
from cen_jax.tasks.segmentation.models import resnet

BN_MODES = ('frozen', 'batch')


class CEN(nn.Module):
  """Channel-Exchanging Network for dense prediction.

  Attributes:
    num_classes: K.
    stage_sizes: ResNet blocks per stage (``resnet.STAGE_SIZES``).
    exchange: the exchange variant (``cen_jax.core.exchange.get``), applied
      after every bn2; its mask function and threshold are what training
      metrics and analysis read.
    width: ResNet stem width (64 for the official models).
    decoder_features: RefineNet widths (512, 256 officially).
    bn_mode: ``'frozen'``: BN always normalises with its stored running
      statistics and never updates them, while scale and bias still train
      (the official recipe); ``'batch'``: batch statistics in training,
      running averages at evaluation.
    bn_momentum: Flax momentum of the running averages (PyTorch 0.1 = 0.9).
    bn_epsilon: BN epsilon.
    dropout_rate: decoder dropout in training.
    dtype: computation dtype (parameters stay float32; logits are float32).
    kernels: how conv weight gradients and max-pools are computed
      (``cen_jax.core.kernels``): ``'auto'`` (CPU formulation on the CPU,
      XLA's elsewhere), ``'xla'`` or ``'cpu'``. Same parameters and numbers.
    remat_encoder: recompute the encoder blocks' activations in the backward
      pass (``nn.remat`` per Bottleneck) to save memory.
    heads: multitask heads ``((task, channels), ...)``; empty (default) is
      the single-task network with ``num_classes`` outputs.
    stream_heads: with ``heads``, the head index of each of the S streams.
    suffix_heads: name even a single head ``clf_conv_<task>`` and its
      ensemble weights ``alpha_<task>`` (multitask models whose passes
      hold one head each); by default one head keeps the official names.
  """
  num_classes: int
  stage_sizes: Sequence[int]
  exchange: exchange_lib.Exchange
  width: int = 64
  decoder_features: Sequence[int] = (512, 256)
  bn_mode: str = 'frozen'
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  dropout_rate: float = 0.5
  dtype: Any = jnp.float32
  kernels: str = 'auto'
  remat_encoder: bool = False
  heads: Sequence[tuple[str, int]] = ()
  stream_heads: Sequence[int] = ()
  suffix_heads: bool = False

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool = False,
               step: Any = None,
               progress: Any = None) -> dict[str, jnp.ndarray]:
    """Runs the network.

    Args:
      x: ``(M, B, H, W, 3)`` float inputs, one slice per modality.
      train: enables dropout and, in ``'batch'`` BN mode, batch statistics
        (then ``batch_stats`` must be mutable).
      step: the training step, for exchange rules that read it (training
        only).
      progress: ``step / total_steps``, likewise. Rules created with
        ``needs_rng`` also need an ``'exchange'`` rng stream in training.

    Returns:
      ``'modality_logits'`` ``(M, B, ceil(H/4), ceil(W/4), K)``,
      ``'ensemble_logits'`` ``(B, ceil(H/4), ceil(W/4), K)`` and ``'alpha'``,
      the softmax ensemble weights ``(M,)``. All float32. With ``heads``:
      ``'streams'`` ``{task: (S_t, B, h, w, C_t)}``, ``'ensemble'``
      ``{task: (B, h, w, C_t)}`` and ``'alpha'`` ``{task: (S_t,)}``.
    """
    if self.bn_mode not in BN_MODES:
      raise ValueError(f'bn_mode {self.bn_mode!r} not in {BN_MODES}')
    num_modalities, batch = x.shape[:2]
    norm = layers.private_norm(
        use_running_average=self.bn_mode == 'frozen' or not train,
        momentum=self.bn_momentum, epsilon=self.bn_epsilon, dtype=self.dtype)
    ctx = exchange_lib.Context(train=train, step=step, progress=progress)
    feats = resnet.ResNetEncoder(
        self.stage_sizes, self.exchange, norm, width=self.width,
        dtype=self.dtype, kernels=self.kernels, remat=self.remat_encoder,
        name='encoder')(x.astype(self.dtype), ctx)
    # The decoder is fully shared and BN-free: fold M into the batch.
    feats = [f.reshape((-1,) + f.shape[2:]) for f in feats]
    if self.heads:
      if len(self.stream_heads) != num_modalities:
        raise ValueError(f'{num_modalities} input streams but stream_heads '
                         f'names {len(self.stream_heads)}')
      outs = refinenet.RefineNetDecoder(
          self.num_classes, self.decoder_features, self.dropout_rate,
          self.dtype, self.kernels, heads=tuple(self.heads),
          stream_heads=tuple(self.stream_heads),
          suffix_heads=self.suffix_heads,
          name='decoder')(feats, train=train)
      result = {'streams': {}, 'ensemble': {}, 'alpha': {}}
      for task, _ in self.heads:
        out = outs[task].astype(jnp.float32)
        name = ('alpha' if len(self.heads) == 1 and not self.suffix_heads
                else f'alpha_{task}')
        result['streams'][task] = out
        result['ensemble'][task], result['alpha'][task] = self._ensemble(
            out, name)
      return result
    logits = refinenet.RefineNetDecoder(
        self.num_classes, self.decoder_features, self.dropout_rate,
        self.dtype, self.kernels, name='decoder')(feats, train=train)
    logits = logits.astype(jnp.float32)
    logits = logits.reshape((num_modalities, batch) + logits.shape[1:])
    ensemble, alpha_soft = self._ensemble(logits, 'alpha')
    return {
        'modality_logits': logits,
        'ensemble_logits': ensemble,
        'alpha': alpha_soft,
    }

  def _ensemble(self, outputs: jnp.ndarray,
                name: str) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Softmax(alpha)-weighted sum of ``(N, ...)`` outputs; (sum, weights)."""
    alpha = self.param(name, nn.initializers.ones, (outputs.shape[0],),
                       jnp.float32)
    alpha_soft = jax.nn.softmax(alpha)
    # The ensemble trains only alpha: the branch outputs are detached.
    detached = jax.lax.stop_gradient(outputs)
    ensemble = alpha_soft[0] * detached[0]
    for m in range(1, outputs.shape[0]):
      ensemble = ensemble + alpha_soft[m] * detached[m]
    return ensemble, alpha_soft


def bn2_scales(params: Any) -> dict[str, jnp.ndarray]:
  """``{site: (M, C) bn2 scale}`` for every Bottleneck, in network order."""
  out = {}
  for name, sub in params['encoder'].items():
    if name.startswith('layer'):
      stage, block = name[len('layer'):].split('_')
      out[(int(stage), int(block))] = sub['bn2']['scale']
  return {resnet.site_name(*k): out[k] for k in sorted(out)}
