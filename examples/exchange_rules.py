"""Your own exchange rules, in your own module: an example.

Select one by import path, without editing cen_jax:

  python main.py --config=configs/quickstart.py --workdir=/tmp/cen_relative \
    --config.model.exchange=examples.exchange_rules:relative_threshold \
    --config.model.exchange_kwargs="{'ratio': 0.1}"

A plain function is a hard *mask* rule: ``(scale (M, C), *, site, ctx) ->
(M, C) bool``, True where modality m's channel c is replaced by the mean of
the other modalities. ``exchange.soft(...)`` wraps a rule that returns
weights in [0, 1] instead; ``exchange.function(...)`` a rule that rewrites
the activations itself. ``ctx`` carries ``train``, ``step``, ``progress``
and, for rules made with ``needs_rng=True``, a key per step and site;
evaluation passes no step, progress or key. Hyperparameters come from
``config.model.exchange_kwargs``.
"""

import jax
import jax.numpy as jnp

from cen_jax.core import exchange


def relative_threshold(scale, *, site, ctx=None, ratio=0.1):
  """Replace a channel where its |gamma| is below ``ratio`` times the
  largest |gamma| the other modalities have on it: take a channel only from
  a modality that uses it much more."""
  del site, ctx
  g = jnp.abs(scale)
  strongest_other = jnp.stack([
      jnp.max(jnp.concatenate([g[:m], g[m + 1:]]), axis=0)
      for m in range(g.shape[0])])
  return g < ratio * strongest_other


def _gamma_softmax_weights(scale, *, site, ctx=None, temperature=0.05):
  del site, ctx
  # Each modality keeps its own share of the channel in proportion to
  # softmax(|gamma| / T) over the modalities; the rest comes from the
  # others.
  return 1.0 - jax.nn.softmax(jnp.abs(scale) / temperature, axis=0)


# A soft rule: weights in [0, 1], differentiable in gamma.
gamma_softmax = exchange.soft(_gamma_softmax_weights)
