"""The model's public contract: shapes, sizes, ensemble, BN modes, M."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cen_jax.tasks.segmentation import models
from tests import parity_utils as pu

TINY = dict(depth='tiny', num_classes=5, exchange='bn_threshold', width=8,
            decoder_features=(16, 8), dropout_rate=0.0)


@functools.lru_cache(maxsize=None)
def _init(cfg_items, shape):
  model = models.build(dict(cfg_items))
  v = jax.jit(functools.partial(model.init, train=False))(
      jax.random.key(0), jnp.zeros(shape))
  return model, v


def _tiny(shape=(2, 2, 37, 50, 3), **overrides):
  return _init(tuple(sorted({**TINY, **overrides}.items())), shape)


@pytest.mark.parametrize('depth', [50, 101, 152])
def test_parameter_count_equals_official(depth):
  model = models.build(dict(depth=depth, num_classes=40,
                            exchange='bn_threshold'))
  shapes = jax.eval_shape(functools.partial(model.init, train=False),
                          jax.random.key(0), jnp.zeros((2, 1, 64, 64, 3)))
  count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(
      shapes['params']))
  official = sum(int(np.prod(s)) for k, s in pu.key_shapes(depth).items()
                 if not k.endswith(('running_mean', 'running_var',
                                    'num_batches_tracked')))
  assert count == official
  if depth == 101:
    assert count == 118_201_578


def test_output_contract_and_ensemble_on_odd_sizes():
  model, v = _tiny()
  x = jax.random.normal(jax.random.key(1), (2, 2, 37, 50, 3))
  alpha = jnp.array([0.3, -0.2])
  v = {**v, 'params': {**v['params'], 'alpha': alpha}}
  out = jax.jit(functools.partial(model.apply, train=False))(v, x)
  assert out['modality_logits'].shape == (2, 2, 10, 13, 5)
  assert out['ensemble_logits'].shape == (2, 10, 13, 5)
  a = np.exp([0.3, -0.2]) / np.exp([0.3, -0.2]).sum()
  np.testing.assert_allclose(out['alpha'], a, rtol=1e-6)
  np.testing.assert_allclose(
      out['ensemble_logits'],
      a[0] * out['modality_logits'][0] + a[1] * out['modality_logits'][1],
      rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('num_modalities', [1, 3])
def test_any_number_of_modalities(num_modalities):
  shape = (num_modalities, 1, 32, 32, 3)
  model, v = _tiny(shape)
  assert v['params']['alpha'].shape == (num_modalities,)
  assert v['params']['encoder']['layer1_0']['bn2']['scale'].shape == (
      num_modalities, 8)
  out = jax.jit(functools.partial(model.apply, train=False))(
      v, jnp.ones(shape))
  assert out['modality_logits'].shape == (num_modalities, 1, 8, 8, 5)
  if num_modalities == 1:  # the unimodal baseline: ensemble = its logits
    np.testing.assert_allclose(out['ensemble_logits'],
                               out['modality_logits'][0], rtol=1e-6)


def test_frozen_bn_trains_with_running_statistics():
  model, v = _tiny()
  x = jax.random.normal(jax.random.key(2), (2, 2, 37, 50, 3))
  out_eval = jax.jit(functools.partial(model.apply, train=False))(v, x)
  out_train, updates = jax.jit(functools.partial(
      model.apply, train=True, mutable=['batch_stats']))(
          v, x, rngs={'dropout': jax.random.key(0)})
  np.testing.assert_array_equal(out_train['modality_logits'],
                                out_eval['modality_logits'])
  jax.tree.map(np.testing.assert_array_equal, updates['batch_stats'],
               v['batch_stats'])


def test_batch_bn_normalises_each_modality_with_its_own_statistics():
  """Modality 1 = 3 x modality 0: private batch stats undo the factor."""
  model, v = _tiny(bn_mode='batch')
  x0 = jax.random.normal(jax.random.key(3), (2, 37, 50, 3))
  x = jnp.stack([x0, 3.0 * x0])
  out, updates = jax.jit(functools.partial(
      model.apply, train=True, mutable=['batch_stats', 'intermediates']))(
          v, x)
  del out
  stem = updates['intermediates']['encoder']['stem'][0]
  np.testing.assert_allclose(stem[1], stem[0], rtol=0, atol=1e-3)
  mean = updates['batch_stats']['encoder']['bn1']['mean']
  # Conv is linear without bias: modality 1's batch mean is 3x, and the
  # running mean moves 0.1 of the way from 0 (PyTorch momentum 0.1).
  np.testing.assert_allclose(mean[1], 3.0 * mean[0], rtol=1e-4, atol=1e-6)
  assert np.abs(mean).max() > 0


def test_unknown_choices_are_listed():
  with pytest.raises(ValueError, match=r"\[50, 101, 152|'tiny'"):
    models.build({**TINY, 'depth': 34})
  with pytest.raises(ValueError, match='frozen'):
    models.build({**TINY, 'bn_mode': 'sync'})
  with pytest.raises(ValueError, match='bfloat16'):
    models.build({**TINY, 'dtype': 'float16'})


def test_bfloat16_compute_keeps_float32_params_and_outputs():
  model32, v = _tiny()
  model16 = models.build({**TINY, 'dtype': 'bfloat16'})
  x = jax.random.normal(jax.random.key(4), (2, 2, 37, 50, 3))
  out32 = jax.jit(functools.partial(model32.apply, train=False))(v, x)
  out16 = jax.jit(functools.partial(model16.apply, train=False))(v, x)
  assert out16['modality_logits'].dtype == jnp.float32
  assert v['params']['decoder']['clf_conv']['kernel'].dtype == jnp.float32
  scale = np.abs(out32['modality_logits']).max()
  # bf16 has an 8-bit mantissa: agreement to a few percent of the scale.
  np.testing.assert_allclose(out16['modality_logits'],
                             out32['modality_logits'], rtol=0,
                             atol=0.05 * scale)


def test_encoder_remat_changes_memory_not_numbers():
  """remat_encoder recomputes block activations: same params, loss, grads.

  Training mode with batch statistics and a random exchange rule, so the
  recomputed forward must also redraw the same exchange keys and sow the
  same intermediates.
  """
  x = jax.random.normal(jax.random.key(1), (2, 2, 32, 40, 3))
  results = []
  for remat in (False, True):
    model = models.build({**TINY, 'bn_mode': 'batch',
                          'exchange': 'random_per_step',
                          'exchange_kwargs': {'ratio': 0.3},
                          'remat_encoder': remat})
    v = jax.jit(model.init)(jax.random.key(0), x)

    def loss(params, model=model, v=v):
      out, state = model.apply(
          {**v, 'params': params}, x, train=True,
          rngs={'exchange': jax.random.key(3)},
          mutable=['batch_stats', 'intermediates'])
      return jnp.sum(out['modality_logits'] ** 2), state

    (value, state), grads = jax.jit(jax.value_and_grad(
        loss, has_aux=True))(v['params'])
    results.append((v, value, state, grads))
  (v0, l0, s0, g0), (v1, l1, s1, g1) = results
  jax.tree.map(np.testing.assert_array_equal, v0, v1)
  np.testing.assert_allclose(l1, l0, rtol=1e-6)
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-5,
                                 atol=1e-6), s1, s0)
  # Gradients: equal up to float summation order (XLA fuses the recomputed
  # forward differently).
  jax.tree.map(lambda a, b: np.testing.assert_allclose(
      a, b, rtol=0, atol=1e-5 * max(np.abs(b).max(), 1e-6)), g1, g0)
