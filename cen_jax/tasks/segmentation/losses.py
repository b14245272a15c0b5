"""Segmentation losses as the official ``main.py`` computes them."""

import jax
import jax.numpy as jnp

from cen_jax.core import resize
from data import conventions


def cross_entropy(logits: jnp.ndarray, labels: jnp.ndarray, *,
                  ignore_index: int = conventions.IGNORE_LABEL) -> jnp.ndarray:
  """Mean cross-entropy over non-ignored pixels, logits upsampled to labels.

  The logits are resized bilinearly with ``align_corners=False`` to the
  label size before the log-softmax, as the official loss does (the decoder
  and evaluation use other resamplers).

  Args:
    logits: ``(B, h, w, K)``.
    labels: ``(B, H, W)`` ints; ``ignore_index`` pixels do not count.
    ignore_index: the void label.

  Returns:
    Scalar float32; 0 when every pixel is ignored.
  """
  logits = resize.resize_bilinear(
      logits.astype(jnp.float32), labels.shape[1:3], align_corners=False)
  valid = labels != ignore_index
  safe = jnp.where(valid, labels, 0).astype(jnp.int32)
  logp = jax.nn.log_softmax(logits, axis=-1)
  nll = -jnp.take_along_axis(logp, safe[..., None], axis=-1)[..., 0]
  count = jnp.sum(valid)
  return jnp.sum(jnp.where(valid, nll, 0.0)) / jnp.maximum(count, 1)


def segmentation_losses(outputs: dict[str, jnp.ndarray], labels: jnp.ndarray,
                        *, ignore_index: int = conventions.IGNORE_LABEL
                        ) -> dict[str, jnp.ndarray]:
  """Cross-entropy of every modality output and of the ensemble.

  Args:
    outputs: the model's output dict.
    labels: ``(B, H, W)``.
    ignore_index: the void label.

  Returns:
    ``{'ce_modality': (M,), 'ce_ensemble': (), 'ce_total': ()}`` where
    ``ce_total`` is the sum of all M + 1 terms (the official task loss; the
    L1 term is added by the optimiser, ``segmentation.optim``).
  """
  with jax.named_scope('loss'):
    per_modality = jnp.stack([
        cross_entropy(l, labels, ignore_index=ignore_index)
        for l in outputs['modality_logits']
    ])
    ens = cross_entropy(outputs['ensemble_logits'], labels,
                        ignore_index=ignore_index)
  return {
      'ce_modality': per_modality,
      'ce_ensemble': ens,
      'ce_total': jnp.sum(per_modality) + ens,
  }
