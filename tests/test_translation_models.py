"""Translation building blocks against known answers: InstanceNorm against
PyTorch's, the GAN losses worked by hand, the exchange sites."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from cen_jax.core import exchange
from cen_jax.core import layers
from cen_jax.core import torch_io
from cen_jax.tasks.translation import convert
from cen_jax.tasks.translation import losses
from cen_jax.tasks.translation import models


def _torch_instance_norm(x_nhwc, weight, bias, mean, var):
  norm = torch.nn.InstanceNorm2d(x_nhwc.shape[-1], affine=True,
                                 track_running_stats=True)
  with torch.no_grad():
    norm.weight.copy_(torch.tensor(weight))
    norm.bias.copy_(torch.tensor(bias))
    norm.running_mean.copy_(torch.tensor(mean))
    norm.running_var.copy_(torch.tensor(var))
  return norm


def test_instance_norm_matches_pytorch_in_both_modes_and_its_update():
  rng = np.random.default_rng(0)
  x = rng.standard_normal((3, 5, 6, 4)).astype(np.float32) * 2 + 1
  w, b = rng.uniform(0.5, 1.5, 4), rng.standard_normal(4)
  mean, var = rng.standard_normal(4) * 0.1, rng.uniform(0.5, 1.5, 4)
  variables = {'params': {'scale': w.astype(np.float32),
                          'bias': b.astype(np.float32)},
               'batch_stats': {'mean': mean.astype(np.float32),
                               'var': var.astype(np.float32)}}
  ref = _torch_instance_norm(x, w, b, mean, var)
  xt = torch.tensor(x.transpose(0, 3, 1, 2))
  want = ref(xt).detach().numpy().transpose(0, 2, 3, 1)  # Training mode.
  ours, moved = layers.InstanceNorm().apply(variables, x,
                                            mutable=['batch_stats'])
  np.testing.assert_allclose(ours, want, atol=1e-5)
  np.testing.assert_allclose(moved['batch_stats']['mean'],
                             ref.running_mean.numpy(), atol=1e-6)
  np.testing.assert_allclose(moved['batch_stats']['var'],
                             ref.running_var.numpy(), atol=1e-6)
  ref.eval()
  want = ref(xt).detach().numpy().transpose(0, 2, 3, 1)
  ours = layers.InstanceNorm(use_running_average=True).apply(
      {'params': variables['params'], 'batch_stats': moved['batch_stats']},
      x)
  np.testing.assert_allclose(ours, want, atol=1e-5)


def test_shared_instance_norm_moves_once_per_modality_in_order():
  """The official shared critic IN is called once per modality: two
  momentum steps, modality 0 first."""
  x = np.zeros((2, 1, 2, 2, 1), np.float32)
  x[0] += np.array([[0.0], [2.0]])[None]  # Modality 0: mean 1.
  x[1] += np.array([[4.0], [4.0]])[None]  # Modality 1: mean 4, var 0.
  flat = x.reshape(2, 2, 2, 1)
  norm = layers.InstanceNorm(groups=2)
  variables = norm.init(jax.random.key(0), flat)
  _, moved = norm.apply(variables, flat, mutable=['batch_stats'])
  # mean: 0 -> 0.1 * 1 = 0.1 -> 0.9 * 0.1 + 0.1 * 4 = 0.49.
  np.testing.assert_allclose(moved['batch_stats']['mean'], [0.49], rtol=1e-6)
  # var (unbiased over 4 pixels: 4/3 for modality 0, 0 for 1):
  # 1 -> 0.9 + 0.1 * 4/3 -> 0.9 * that + 0.
  np.testing.assert_allclose(moved['batch_stats']['var'],
                             [0.9 * (0.9 + 0.4 / 3)], rtol=1e-6)


def test_bce_terms_by_hand():
  logits = jnp.array([[0.0, np.log(3.0)]])  # sigmoid: 1/2 and 3/4.
  np.testing.assert_allclose(losses.bce_real(logits),
                             [-(np.log(0.5) + np.log(0.75)) / 2], rtol=1e-6)
  np.testing.assert_allclose(losses.bce_fake(logits),
                             [-(np.log(0.5) + np.log(0.25)) / 2], rtol=1e-6)
  # Stable where the probability form overflows: BCE(sigmoid(-200), 1).
  assert float(losses.bce_real(jnp.array([[-200.0]]))[0]) == pytest.approx(
      200.0)


def test_generator_and_discriminator_losses_by_hand():
  target = jnp.zeros((1, 1, 2, 1))
  outputs = jnp.array([[[[[0.5], [-0.5]]]], [[[[1.0], [1.0]]]]])  # M = 2.
  ensemble = jnp.full((1, 1, 2, 1), 0.25)
  fake = jnp.zeros((2, 1, 1, 1))  # sigmoid 1/2 everywhere.
  terms = losses.generator_losses(fake, outputs, ensemble, target,
                                  l1_weight=100.0)
  np.testing.assert_allclose(terms['g_gan'], 2 * np.log(2), rtol=1e-6)
  # 100 * (0.5 + 1.0 + 0.25).
  np.testing.assert_allclose(terms['g_l1'], 175.0, rtol=1e-6)
  real = jnp.full((2, 1, 1, 1), np.log(3.0))
  # Per modality (-log 3/4 - log 1/2) / 2, twice.
  np.testing.assert_allclose(
      losses.discriminator_loss(real, fake),
      -(np.log(0.75) + np.log(0.5)), rtol=1e-6)


def test_per_image_errors_by_hand():
  images = jnp.array([[[[1.0]], [[-1.0]]]])[None]  # (1, 1, 2, 1, 1)
  l1, mse = losses.per_image_errors(images.reshape(1, 1, 2, 1, 1),
                                    jnp.zeros((1, 2, 1, 1)))
  np.testing.assert_allclose(l1, [[1.0]])
  np.testing.assert_allclose(mse, [[1.0]])


def _tiny(exchange_name='bn_threshold', **kwargs):
  return models.Generator(exchange.get(exchange_name, threshold=1e-2),
                          ngf=4, num_downs=4, **kwargs)


def test_exchange_sites_and_what_they_exchange():
  """With conv2's modality-0 gamma zeroed on channel 1, modality 0's conv2
  output there is modality 1's; nothing else moves."""
  g = _tiny()
  x = jax.random.normal(jax.random.key(1), (2, 1, 16, 16, 3))
  variables = g.init(jax.random.key(0), x)
  assert list(models.in_scales(variables['params'])) == ['conv2', 'conv3']
  params = jax.tree.map(np.array, variables['params'])
  params['conv2']['norm']['scale'][0, 1] = 0.0
  apply = functools.partial(g.apply, mutable=['intermediates'])
  _, plain = jax.jit(apply)(variables, x)
  _, inter = jax.jit(apply)({**variables, 'params': params}, x)
  before = plain['intermediates']['conv2_out'][0]
  after = inter['intermediates']['conv2_out'][0]
  # Modality 0's channel 1 is now modality 1's IN output, which is unchanged.
  np.testing.assert_array_equal(after[0, ..., 1], before[1, ..., 1])
  np.testing.assert_array_equal(after[1], before[1])
  np.testing.assert_array_equal(np.delete(after[0], 1, -1),
                                np.delete(before[0], 1, -1))


def test_one_input_runs_without_exchange_and_ensemble_is_its_output():
  g = _tiny()
  x = jax.random.normal(jax.random.key(1), (1, 2, 16, 16, 3))
  out = g.apply(g.init(jax.random.key(0), x), x)
  np.testing.assert_array_equal(out['ensemble'], out['outputs'][0])
  np.testing.assert_array_equal(out['alpha'], [1.0])


def test_generator_refuses_sizes_the_unet_cannot_halve():
  g = _tiny()
  with pytest.raises(ValueError, match=r'20x16.*multiples of 16'):
    g.init(jax.random.key(0), jnp.zeros((2, 1, 20, 16, 3)))


def test_discriminator_patch_size_and_shared_weights():
  d = models.Discriminator(ndf=4)
  x = jax.random.normal(jax.random.key(0), (2, 1, 64, 64, 3))
  y = jax.random.normal(jax.random.key(1), (1, 64, 64, 3))
  variables = d.init(jax.random.key(2), x, y)
  logits = d.apply(variables, x, y, train=True)
  assert logits.shape == (2, 1, 6, 6)  # 64 -> 32 -> 16 -> 8 -> 7 -> 6.
  # Shared: modality 1 scored alone gives the same map.
  alone = d.apply(variables, x[1:], y, train=True)
  np.testing.assert_allclose(alone[0], logits[1], rtol=1e-6, atol=1e-6)
  assert isinstance(d, nn.Module)


def test_official_key_layout_round_trips_for_three_inputs():
  """Export to official keys and import back, M = 3: bit for bit; the
  official insnorm_<m> rows, and a state dict of another M is refused with
  the modality named."""
  g = _tiny()
  x = jnp.zeros((3, 1, 16, 16, 3))
  variables = jax.tree.map(np.asarray, g.init(jax.random.key(3), x))
  sd = convert.to_torch_state_dict(variables, 'generator')
  assert sd['alpha'].shape == (3,)
  assert 'conv2.insnorm_conv.insnorm_2.weight' in sd
  np.testing.assert_array_equal(
      sd['conv2.insnorm_conv.insnorm_2.running_var'],
      variables['batch_stats']['conv2']['norm']['var'][2])
  kernel = variables['params']['deconv1']['deconv']['kernel']  # (4,4,O,I)
  assert sd['deconv1.deconv.module.weight'].shape == (
      kernel.shape[3], kernel.shape[2], 4, 4)  # PyTorch [in, out, kh, kw].
  back = convert.from_torch_state_dict(sd, 'generator', variables)
  jax.tree.map(np.testing.assert_array_equal, back, dict(variables))
  two = {k: v for k, v in sd.items() if 'insnorm_2' not in k}
  two['alpha'] = sd['alpha'][:2]
  with pytest.raises(torch_io.ConversionError,
                     match=r'missing modality 2 of params/conv2/norm/scale'):
    convert.from_torch_state_dict(two, 'generator', variables)
