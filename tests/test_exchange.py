"""Known answers for the exchange variants."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cen_jax.core import exchange
from cen_jax.tasks.segmentation import models


def _x(num_modalities, channels):
  # Value 100*m + c: every entry names its modality and channel.
  v = 100.0 * np.arange(num_modalities)[:, None] + np.arange(channels)
  return jnp.asarray(v[:, None, None, None, :], jnp.float32)


def test_two_modalities_is_the_official_swap():
  fn = exchange.get('bn_threshold', threshold=0.02)
  scale = jnp.array([[1.0, 0.01, -0.015, 0.5],
                     [0.01, 0.9, -0.019, 0.03]])
  out = fn(_x(2, 4), scale, site='layer1.0')[:, 0, 0, 0]
  # rgb: channels 1, 2 (|-0.015| < 0.02) come from depth; depth: 0, 2.
  np.testing.assert_array_equal(out, [[0, 101, 102, 3], [0, 101, 2, 103]])


def test_three_modalities_take_the_mean_of_the_others():
  fn = exchange.get('bn_threshold')
  scale = jnp.array([[0.001, 1.0], [1.0, 1.0], [1.0, 0.001]])
  out = fn(_x(3, 2), scale, site='s')[:, 0, 0, 0]
  # m=0, c=0: mean(100, 200) = 150. m=2, c=1: mean(1, 101) = 51.
  np.testing.assert_array_equal(out, [[150, 1], [100, 101], [200, 51]])


def test_single_modality_and_none_are_identity():
  x = _x(1, 3)
  scale = jnp.zeros((1, 3))
  np.testing.assert_array_equal(
      exchange.get('bn_threshold')(x, scale, site='s'), x)
  x2 = _x(2, 3)
  np.testing.assert_array_equal(
      exchange.get('none')(x2, jnp.zeros((2, 3)), site='s'), x2)


def test_replaced_channel_gives_its_own_branch_no_gradient():
  fn = exchange.get('bn_threshold')
  scale = jnp.array([[0.0, 1.0], [1.0, 1.0]])
  weights = jnp.array([1.0, 10.0])[:, None, None, None, None]  # per output m

  def f(x):
    return jnp.sum(weights * fn(x, scale, site='s'))

  g = jax.grad(f)(_x(2, 2))[:, 0, 0, 0]
  # Channel 0 of rgb is discarded: 0. Depth's channel 0 feeds both outputs:
  # 1 (as rgb's replacement) + 10 (its own).
  np.testing.assert_array_equal(g, [[0.0, 1.0], [11.0, 10.0]])


def test_random_is_fixed_per_site_and_differs_between_sites():
  mask_fn = exchange.get_mask_fn('random', ratio=0.25, seed=3)
  scale = jnp.ones((2, 64))
  a = np.asarray(mask_fn(scale, site='layer1.0'))
  assert a.sum(axis=1).tolist() == [16, 16]
  np.testing.assert_array_equal(a, mask_fn(scale, site='layer1.0'))
  assert not np.array_equal(a, mask_fn(scale, site='layer1.1'))
  assert not np.array_equal(a[0], a[1])
  out = exchange.get('random', ratio=0.25, seed=3)(
      _x(2, 64), scale, site='layer1.0')[:, 0, 0, 0]
  x = np.asarray(_x(2, 64))[:, 0, 0, 0]
  np.testing.assert_array_equal(out, np.where(a, x[::-1], x))


def test_fractions_and_unknown_names():
  mask_fn = exchange.get_mask_fn('bn_threshold', threshold=0.02)
  fr = exchange.exchange_fractions(
      {'layer1.0': jnp.array([[0.0, 1.0, 0.01, 1.0], [1.0] * 4])}, mask_fn)
  np.testing.assert_array_equal(fr['layer1.0'], [0.5, 0.0])
  with pytest.raises(ValueError, match=r"'bn_threshold', 'none', 'random'"):
    exchange.get('swap')


def test_the_built_model_carries_its_variant_mask_and_threshold():
  """Metrics and plots read ``model.exchange``: nothing is re-derived."""
  tiny = dict(depth='tiny', num_classes=5, width=8, decoder_features=(16, 8))
  model = models.build(dict(tiny, exchange='bn_threshold',
                            exchange_kwargs={'threshold': 0.05}))
  assert model.exchange.name == 'bn_threshold'
  assert model.exchange.threshold == 0.05
  scale = jnp.array([[0.04, 0.06], [-0.01, 1.0]])
  np.testing.assert_array_equal(model.exchange.mask_fn(scale, site='s'),
                                [[True, False], [True, False]])
  # The variant's own default threshold, and the official reference value
  # for variants that have none.
  assert models.build(dict(tiny, exchange='bn_threshold')
                      ).exchange.threshold == 0.02
  assert models.build(dict(tiny, exchange='random')).exchange.threshold == (
      exchange.REFERENCE_THRESHOLD)
