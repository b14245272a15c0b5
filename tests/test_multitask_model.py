"""The stream core with task heads: names, routing, and the single-task case.

The multitask network is ``CEN`` with ``heads``: every conv and the exchange
shared over S streams, one final conv per task applied to that task's
streams only, one alpha-ensemble per task. With one head it must be the
segmentation network itself, parameter for parameter and bit for bit.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cen_jax.tasks.segmentation import models

TINY = dict(depth='tiny', num_classes=5, exchange='bn_threshold', width=8,
            decoder_features=(16, 8), dropout_rate=0.0)
SHAPE = (3, 2, 32, 32, 3)


def _init(model):
  return jax.jit(functools.partial(model.init, train=False))(
      jax.random.key(0), jnp.zeros(SHAPE))


def _apply(model, variables, x):
  return jax.jit(functools.partial(model.apply, train=False))(variables, x)


@functools.lru_cache(maxsize=None)
def _legacy():
  model = models.build(TINY)
  return model, _init(model)


def _randomise(variables, seed):
  """Spread every parameter so each stream's BN (and exchange) differs."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda a: a + rng.normal(0, 0.3, a.shape).astype(a.dtype), variables)


def test_heads_route_each_task_to_its_own_streams():
  # Streams 0 and 2 are task 'a' (5 channels), stream 1 task 'b' (3).
  model = models.build(TINY, heads=(('a', 5), ('b', 3)),
                       stream_heads=(0, 1, 0))
  v = _randomise(_init(model), seed=1)
  params = v['params']
  assert params['decoder']['clf_conv_a']['kernel'].shape == (3, 3, 8, 5)
  assert params['decoder']['clf_conv_b']['kernel'].shape == (3, 3, 8, 3)
  assert 'clf_conv' not in params['decoder'] and 'alpha' not in params
  assert params['alpha_a'].shape == (2,) and params['alpha_b'].shape == (1,)
  x = jax.random.normal(jax.random.key(2), SHAPE)
  out = _apply(model, v, x)
  assert out['streams']['a'].shape == (2, 2, 8, 8, 5)
  assert out['streams']['b'].shape == (1, 2, 8, 8, 3)

  # The known answer: the single-task network with the same shared layers,
  # BNs and exchange over the same three streams, whose one classifier is
  # set to a task's head, gives that task's streams exactly.
  legacy, lv = _legacy()
  shared = {k: p for k, p in params.items() if not k.startswith('alpha')}
  decoder = {k: p for k, p in shared['decoder'].items()
             if not k.startswith('clf_conv')}
  for task, streams in (('a', [0, 2]), ('b', [1])):
    lparams = {**shared, 'alpha': lv['params']['alpha'],
               'decoder': {**decoder,
                           'clf_conv': params['decoder'][f'clf_conv_{task}']}}
    if task == 'b':  # the legacy classifier has 5 channels; pad with zeros
      k = lparams['decoder']['clf_conv']
      lparams['decoder']['clf_conv'] = {
          'kernel': jnp.pad(k['kernel'], ((0, 0),) * 3 + ((0, 2),)),
          'bias': jnp.pad(k['bias'], (0, 2))}
    ref = _apply(legacy, {**v, 'params': lparams}, x)['modality_logits']
    ref = ref[np.array(streams)][..., :out['streams'][task].shape[-1]]
    np.testing.assert_allclose(out['streams'][task], ref, rtol=1e-5,
                               atol=1e-5)

  # Each task's ensemble: softmax(alpha_t) over its own streams.
  a = jax.nn.softmax(params['alpha_a'])
  np.testing.assert_allclose(out['alpha']['a'], a, rtol=1e-6)
  np.testing.assert_allclose(
      out['ensemble']['a'],
      a[0] * out['streams']['a'][0] + a[1] * out['streams']['a'][1],
      rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(out['ensemble']['b'], out['streams']['b'][0],
                             rtol=1e-6)


def test_one_head_is_the_segmentation_network_bit_for_bit():
  model = models.build(TINY, heads=(('semseg', 5),), stream_heads=(0, 0, 0))
  legacy, lv = _legacy()
  v = _init(model)
  assert (jax.tree.structure(v) == jax.tree.structure(lv))
  for a, b in zip(jax.tree.leaves(v), jax.tree.leaves(lv)):
    np.testing.assert_array_equal(a, b)
  v = _randomise(v, seed=3)
  x = jax.random.normal(jax.random.key(4), SHAPE)
  out, ref = _apply(model, v, x), _apply(legacy, v, x)
  np.testing.assert_array_equal(out['streams']['semseg'],
                                ref['modality_logits'])
  np.testing.assert_array_equal(out['ensemble']['semseg'],
                                ref['ensemble_logits'])
  np.testing.assert_array_equal(out['alpha']['semseg'], ref['alpha'])


def test_stream_heads_must_cover_every_stream():
  model = models.build(TINY, heads=(('a', 5),), stream_heads=(0, 0))
  with pytest.raises(ValueError, match='3 input streams but stream_heads'):
    _init(model)
