"""Channel-exchange variants as pure functions over the modality axis.

An exchange maps the post-BN activations of one layer, stacked over the
modality axis, to exchanged activations::

  fn(x: (M, B, H, W, C), scale: (M, C), *, site: str) -> (M, B, H, W, C)

``scale`` is the per-modality BN scale (gamma) of that layer and ``site`` a
stable name of the layer (``'layer1.0'``) for variants that need a per-layer
constant. Every variant is the same masked mean: where ``mask[m, c]`` is set,
channel ``c`` of modality ``m`` is replaced by the mean of that channel over
the other ``M - 1`` modalities (for ``M = 2``, exactly the other modality, so
the official swap is reproduced bit for bit). Variants differ only in how the
mask is chosen, so each is a mask function here.

Gradients route as in the official code: ``jnp.where`` sends no gradient to
the branch it discards, so a replaced channel gives its own modality (and its
gamma and beta) no task gradient. The mask is a comparison and carries no
gradient either; gamma still receives the L1 subgradient from the optimiser.

:func:`get` returns an :class:`Exchange`: the function a model applies at
every exchange site, carrying its mask function and threshold, so that
training metrics, analysis plots and the model read one configured variant
(``model.exchange``) instead of re-deriving it from the config.
"""

import dataclasses
import functools
import inspect
import zlib
from typing import Callable, Protocol

import jax.numpy as jnp
import numpy as np

MaskFn = Callable[..., jnp.ndarray]


class ExchangeFn(Protocol):

  def __call__(self, x: jnp.ndarray, scale: jnp.ndarray, *,
               site: str) -> jnp.ndarray:
    ...


def mean_of_others(x: jnp.ndarray) -> jnp.ndarray:
  """For each m, the mean over the other modalities; ``(M, ...)`` in and out.

  Built from explicit slices rather than ``(sum - x[m]) / (M - 1)`` so that
  for ``M = 2`` the result is the other modality bit for bit.
  """
  num = x.shape[0]
  if num == 1:
    return x
  others = [jnp.concatenate([x[:m], x[m + 1:]], axis=0) for m in range(num)]
  return jnp.stack([jnp.mean(o, axis=0) for o in others], axis=0)


def masked_exchange(x: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
  """Replaces channels where ``mask`` is set by the mean of the others.

  Args:
    x: ``(M, B, H, W, C)`` activations (any rank >= 2 with M first, C last).
    mask: ``(M, C)`` bool, True where modality m's channel c is replaced.

  Returns:
    Array of the shape and dtype of ``x``.
  """
  if x.shape[0] == 1:
    return x
  mask = mask.reshape(mask.shape[:1] + (1,) * (x.ndim - 2) + mask.shape[1:])
  return jnp.where(mask, mean_of_others(x), x)


def none_mask(scale: jnp.ndarray, *, site: str) -> jnp.ndarray:
  """No exchange: the ablation without fusion inside the encoder."""
  del site
  return jnp.zeros(scale.shape, bool)


def bn_threshold_mask(scale: jnp.ndarray, *, site: str,
                      threshold: float = 2e-2) -> jnp.ndarray:
  """CEN: exchange where ``|gamma_m[c]| < threshold``, over all channels.

  The official test is on the absolute value and covers every channel, not
  only the slice that the L1 penalty targets (reference §2.3).
  """
  del site
  return jnp.abs(scale) < threshold


def random_mask(scale: jnp.ndarray, *, site: str, ratio: float = 0.1,
                seed: int = 0) -> jnp.ndarray:
  """The paper's random-exchange ablation: a fixed random subset.

  Each layer (``site``) and modality exchanges a fixed set of
  ``round(ratio * C)`` channels drawn from ``seed`` and the site's name, so
  the subset is constant over training and differs between layers.
  """
  num_modalities, channels = scale.shape
  count = int(round(ratio * channels))
  rng = np.random.default_rng([seed, zlib.crc32(site.encode())])
  mask = np.zeros((num_modalities, channels), bool)
  for m in range(num_modalities):
    mask[m, rng.choice(channels, count, replace=False)] = True
  return jnp.asarray(mask)


MASKS: dict[str, MaskFn] = {
    'none': none_mask,
    'bn_threshold': bn_threshold_mask,
    'random': random_mask,
}


# The |gamma| level marked on plots for variants without a threshold: the
# official CEN threshold, for reference.
REFERENCE_THRESHOLD = 2e-2


@dataclasses.dataclass(frozen=True)
class Exchange:
  """One configured exchange variant; call it as ``fn(x, scale, site=...)``.

  Attributes:
    name: the variant's key in ``MASKS``.
    mask_fn: ``mask_fn(scale, *, site) -> (M, C) bool`` with the variant's
      hyperparameters bound.
    threshold: the |gamma| threshold of the variant (its ``threshold``
      hyperparameter, bound or default), or ``REFERENCE_THRESHOLD`` for
      variants without one; what analysis plots mark.
  """
  name: str
  mask_fn: MaskFn
  threshold: float

  def __call__(self, x: jnp.ndarray, scale: jnp.ndarray, *,
               site: str) -> jnp.ndarray:
    if self.name == 'none':  # Skip the where entirely: no work, same result.
      return x
    return masked_exchange(x, self.mask_fn(scale, site=site))


def get_mask_fn(name: str, **kwargs) -> MaskFn:
  """The mask function of variant ``name`` with its hyperparameters bound."""
  if name not in MASKS:
    raise ValueError(
        f'Unknown exchange {name!r}; choose one of {sorted(MASKS)}.')
  return functools.partial(MASKS[name], **kwargs)


def _threshold(name: str, kwargs: dict[str, float]) -> float:
  if 'threshold' in kwargs:
    return float(kwargs['threshold'])
  param = inspect.signature(MASKS[name]).parameters.get('threshold')
  if param is None or param.default is inspect.Parameter.empty:
    return REFERENCE_THRESHOLD
  return float(param.default)


def get(name: str, **kwargs) -> Exchange:
  """The exchange variant ``name`` with hyperparameters bound.

  Args:
    name: one of ``MASKS`` (``'none'``, ``'bn_threshold'``, ``'random'``).
    **kwargs: the variant's hyperparameters (``threshold``; ``ratio``,
      ``seed``).

  Returns:
    An :class:`Exchange`, ``fn(x, scale, *, site) -> x``.
  """
  mask_fn = get_mask_fn(name, **kwargs)
  return Exchange(name, mask_fn, _threshold(name, kwargs))


def exchange_fractions(bn2_scales: dict[str, jnp.ndarray],
                       mask_fn: MaskFn) -> dict[str, jnp.ndarray]:
  """Fraction of exchanged channels per site and modality.

  Args:
    bn2_scales: ``{site: (M, C) scale}``, e.g. from
      ``cen_jax.models.bn2_scales(params)``.
    mask_fn: from ``get_mask_fn``.

  Returns:
    ``{site: (M,) float32}``.
  """
  return {
      site: jnp.mean(mask_fn(s, site=site).astype(jnp.float32), axis=-1)
      for site, s in bn2_scales.items()
  }

