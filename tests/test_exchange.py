"""Known answers for the exchange variants."""

import functools

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
  # A hyperparameter the rule does not take is named with the accepted ones.
  with pytest.raises(ValueError, match=r"\['ratio', 'seed'\].*\['threshold'\]"):
    exchange.get('random', threshold=0.02)


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


def _ctx(**kw):
  return exchange.Context(train=True, **kw)


def test_random_per_step_redraws_with_the_key_and_is_fixed_at_eval():
  fn = exchange.get_mask_fn('random_per_step', ratio=0.25, seed=3)
  scale = jnp.ones((2, 64))
  keys = [jax.random.key(k) for k in (0, 1)]
  a, b = (np.asarray(fn(scale, site='s', ctx=_ctx(rng=k))) for k in keys)
  assert a.sum(axis=1).tolist() == b.sum(axis=1).tolist() == [16, 16]
  assert not np.array_equal(a, b)  # a new subset every step
  np.testing.assert_array_equal(
      a, fn(scale, site='s', ctx=_ctx(rng=keys[0])))  # reproducible
  # Evaluation (no key): the fixed subset of 'random' with the same seed.
  fixed = exchange.get_mask_fn('random', ratio=0.25, seed=3)(scale, site='s')
  for ctx in (None, exchange.Context(train=False)):
    np.testing.assert_array_equal(fn(scale, site='s', ctx=ctx), fixed)


def test_annealed_threshold_grows_with_progress():
  fn = exchange.get_mask_fn('annealed_threshold', start=0.0, threshold=0.02)
  scale = jnp.array([[0.009, 0.011, 0.019, 0.0]])
  # progress 0.5: level 0.01; progress 0: nothing below 0 (not even 0).
  np.testing.assert_array_equal(
      fn(scale, site='s', ctx=_ctx(progress=jnp.float32(0.5))),
      [[True, False, False, True]])
  np.testing.assert_array_equal(
      fn(scale, site='s', ctx=_ctx(progress=jnp.float32(0.0))),
      [[False, False, False, False]])
  # Evaluation: the final threshold.
  np.testing.assert_array_equal(fn(scale, site='s'),
                                [[True, True, True, True]])
  assert exchange.get('annealed_threshold').threshold == 0.02


def test_soft_exchange_mixes_by_weight_and_passes_gradient_to_gamma():
  fn = exchange.get('soft_threshold', threshold=0.02, temperature=0.01)
  assert fn.rule.kind == 'soft'
  # |gamma| = threshold: w = sigmoid(0) = 1/2; far above: w ~ 0.
  scale = jnp.array([[0.02, 10.0], [-0.02, 10.0]])
  np.testing.assert_allclose(fn.weights(scale, site='s'),
                             [[0.5, 0.0], [0.5, 0.0]], atol=1e-6)
  out = fn(_x(2, 2), scale, site='s')[:, 0, 0, 0]
  # Channel 0: both become the mean of 0 and 100; channel 1 is kept.
  np.testing.assert_allclose(out, [[50, 1], [50, 101]], atol=1e-4)

  x = _x(2, 2)

  def total(s):
    return jnp.sum(fn(x, s, site='s')[0])  # rgb's output only

  g = jax.grad(total)(jnp.array([[0.02, 1.0], [0.5, 1.0]]))
  # d/dgamma of x0 + w (x1 - x0) on channel 0 = (100 - 0) * w'(gamma),
  # w' = -w (1 - w) / T = -0.25 / 0.01 at |gamma| = threshold.
  np.testing.assert_allclose(g[0, 0], 100 * -25.0, rtol=1e-5)
  # The hard rule passes none: its mask is a comparison.
  hard = exchange.get('bn_threshold', threshold=0.02)
  g_hard = jax.grad(lambda s: jnp.sum(hard(x, s, site='s')))(
      jnp.array([[0.01, 1.0], [0.5, 1.0]]))
  np.testing.assert_array_equal(g_hard, 0.0)


def test_user_rule_by_import_path(tmp_path, monkeypatch):
  (tmp_path / 'my_rules.py').write_text(
      'import jax.numpy as jnp\n'
      'from cen_jax.core import exchange\n'
      'def below(scale, *, site, ctx=None, level=0.5):\n'
      '  return jnp.abs(scale) < level\n'
      'halves = exchange.soft(lambda scale, *, site, ctx=None: '
      '0.5 * jnp.ones(scale.shape))\n'
      'NOT_A_RULE = 3\n')
  monkeypatch.syspath_prepend(str(tmp_path))
  fn = exchange.get('my_rules:below', level=0.2)
  assert fn.rule.kind == 'mask' and fn.threshold == 0.02
  scale = jnp.array([[0.1, 1.0], [1.0, 1.0]])
  np.testing.assert_array_equal(fn(_x(2, 2), scale, site='s')[:, 0, 0, 0],
                                [[100, 1], [100, 101]])
  np.testing.assert_array_equal(
      exchange.get('my_rules:halves')(_x(2, 1), scale[:, :1], site='s')[
          :, 0, 0, 0], [[50], [50]])
  with pytest.raises(ValueError,
                     match=r"cannot import module 'no_such_pkg.rules'"
                     r" \(ModuleNotFoundError.*'bn_threshold'"):
    exchange.get('no_such_pkg.rules:below')
  with pytest.raises(ValueError,
                     match=r"my_rules\.py\) has no attribute 'missing'"):
    exchange.get('my_rules:missing')
  with pytest.raises(ValueError, match='neither a Rule nor a function'):
    exchange.get('my_rules:NOT_A_RULE')
  with pytest.raises(ValueError, match="needs weights="):
    exchange.Rule('function', lambda x, scale, *, site, ctx: x)


def test_the_model_draws_a_key_per_step_and_site_in_training_only():
  tiny = dict(depth='tiny', num_classes=5, width=8, decoder_features=(16, 8),
              exchange='random_per_step', exchange_kwargs={'ratio': 0.5},
              bn_mode='frozen', dropout_rate=0.0)
  model = models.build(tiny)
  x = jax.random.normal(jax.random.key(0), (2, 1, 32, 32, 3))
  variables = jax.jit(model.init)(jax.random.key(1), x)

  def exchanged(key=None, train=True):
    rngs = {} if key is None else {'exchange': key}
    _, state = jax.jit(functools.partial(
        model.apply, train=train, mutable=['intermediates']))(
            variables, x, rngs=rngs)
    inter = state['intermediates']['encoder']
    return [np.asarray(inter[b]['bn2_exchanged'][0])
            for b in ('layer1_0', 'layer2_0')]

  a, b = exchanged(jax.random.key(5)), exchanged(jax.random.key(6))
  np.testing.assert_array_equal(a[0], exchanged(jax.random.key(5))[0])
  assert not np.array_equal(a[0], b[0])
  # Evaluation needs no key and uses the fixed draw of 'random'.
  fixed = models.build(dict(tiny, exchange='random'))
  _, state = jax.jit(functools.partial(
      fixed.apply, mutable=['intermediates']))(variables, x)
  np.testing.assert_array_equal(
      exchanged(train=False)[1],
      state['intermediates']['encoder']['layer2_0']['bn2_exchanged'][0])


def test_the_example_rules_by_hand():
  """examples/exchange_rules.py, as the README shows it."""
  relative = exchange.get('examples.exchange_rules:relative_threshold',
                          ratio=0.1)
  scale = jnp.array([[0.01, 1.0, 0.5], [1.0, 0.05, 0.04]])
  # rgb c0: 0.01 < 0.1 * 1.0; depth c1: 0.05 < 0.1; depth c2: 0.04 < 0.05.
  np.testing.assert_array_equal(relative.weights(scale, site='s'),
                                [[1, 0, 0], [0, 1, 1]])
  soft = exchange.get('examples.exchange_rules:gamma_softmax',
                      temperature=0.05)
  w = soft.weights(jnp.array([[0.0, 1.0], [1.0, 1.0]]), site='s')
  # Equal scales share half and half; |gamma| 0 against 1 gives all away.
  np.testing.assert_allclose(w, [[1.0, 0.5], [0.0, 0.5]], atol=1e-8)
