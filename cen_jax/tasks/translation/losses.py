"""The official GAN losses of CEN's translation task (reference §8.4).

The official discriminator ends in a sigmoid and its losses are
``nn.BCELoss``; here the discriminator returns logits and the same BCE is
computed in its stable form, ``BCE(sigmoid(l), 1) = softplus(-l)`` and
``BCE(sigmoid(l), 0) = softplus(l)``: equal values, without the overflow
(PyTorch clamps ``log`` at -100, which only matters for |l| > 100).
"""

import jax
import jax.numpy as jnp

L1_WEIGHT = 100.0  # The official ``--gama``.


def bce_real(logits: jnp.ndarray) -> jnp.ndarray:
  """``mean BCE(sigmoid(logits), 1)`` over all but the leading axis."""
  return jnp.mean(jax.nn.softplus(-logits), axis=tuple(range(1, logits.ndim)))


def bce_fake(logits: jnp.ndarray) -> jnp.ndarray:
  """``mean BCE(sigmoid(logits), 0)`` over all but the leading axis."""
  return jnp.mean(jax.nn.softplus(logits), axis=tuple(range(1, logits.ndim)))


def discriminator_loss(real: jnp.ndarray, fake: jnp.ndarray) -> jnp.ndarray:
  """``sum_m (BCE(D(x_m, y), 1) + BCE(D(x_m, G_m), 0)) / 2``.

  Args:
    real: ``(M, B, h, w)`` logits on (input m, target).
    fake: ``(M, B, h, w)`` logits on (input m, output m).
  """
  return jnp.sum(0.5 * (bce_real(real) + bce_fake(fake)))


def generator_losses(fake: jnp.ndarray, outputs: jnp.ndarray,
                     ensemble: jnp.ndarray, target: jnp.ndarray,
                     l1_weight: float = L1_WEIGHT) -> dict[str, jnp.ndarray]:
  """The generator's adversarial and reconstruction terms.

  Args:
    fake: ``(M, B, h, w)`` discriminator logits on (input m, output m).
    outputs: ``(M, B, H, W, C)`` the branch outputs.
    ensemble: ``(B, H, W, C)``.
    target: ``(B, H, W, C)``.
    l1_weight: the coefficient of the L1 term (100 officially).

  Returns:
    ``'g_gan'``: ``sum_m BCE(D(x_m, G_m), 1)``; ``'g_l1'``: ``l1_weight``
    times the sum over the M + 1 outputs (ensemble included) of
    ``mean |G_o - y|``.
  """
  l1 = jnp.sum(jnp.mean(jnp.abs(outputs - target[None]),
                        axis=tuple(range(1, outputs.ndim))))
  l1 = l1 + jnp.mean(jnp.abs(ensemble - target))
  return {'g_gan': jnp.sum(bce_real(fake)), 'g_l1': l1_weight * l1}


def per_image_errors(images: jnp.ndarray, target: jnp.ndarray
                     ) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Per-image ``mean |x - y|`` and ``mean (x - y)^2``, each ``(..., B)``.

  ``images`` is ``(..., B, H, W, C)``; the official evaluation averages
  these over the images and reports ``sqrt`` of the mean MSE as RMSE.
  """
  diff = images - target
  axes = (-3, -2, -1)
  return jnp.mean(jnp.abs(diff), axis=axes), jnp.mean(jnp.square(diff),
                                                      axis=axes)
