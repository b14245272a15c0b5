"""The translation port against the official networks (fixture in ../shared).

Everything is read from the fixture (key lists, seeds, ngf, batch, sizes):
``CEN_TRANSLATION_FIXTURE=/path/to/other.npz`` checks a fixture made the
same way at another width, batch or seed. Select with
``pytest -k "translation and parity"``.

Tolerances are the fixture README's, with two measured exceptions where the
official float32 numbers are themselves further from the exact values than
the README allows (the exact values computed by this port in float64, which
matches the float32 fixture to 2e-6 up to conv6):

* Outputs and activations are held to the README's fail line, 1e-4 of
  max|ref|, not its 1e-5 target: the 2x2 InstanceNorm of conv7 makes the
  official float32 conv7 output 2.6e-5 (and the tanh outputs 1.5e-5) off the
  float64 result; this port's float32 is 1.9e-5 / 1.8e-5 off the fixture.
  The pre-tanh output is held to 1e-5 (measured 1.8e-6).
* Gradients of the InstanceNorm scales and biases are ill-conditioned in
  float32: this port's float32 and float64 gradients differ by up to 0.93 %
  (relative L2), the official float32 ones from the float64 ones by up to
  0.85 % (max). They are held to 2e-2 in relative L2 norm, and the CEN
  semantics of their gradients (an exchanged channel's own gamma and beta
  get nothing but the L1 subgradient) exactly. The well-conditioned
  gradients (alpha, conv1, deconv8, the unused norms) are held to the
  README's 2e-3 (measured <= 1.1e-3).
"""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

# Full-size networks at 256x256: XLA's optimisations pay for themselves.
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures('xla_optimized')]

from cen_jax.core import exchange
from cen_jax.core import sparsity
from cen_jax.tasks.translation import convert
from cen_jax.tasks.translation import losses
from cen_jax.tasks.translation import models
from tests import parity_utils as pu
from tests import paths

SLIM_COEF = 1e-3  # The official --lamda.
FIXTURE = os.environ.get(
    'CEN_TRANSLATION_FIXTURE',
    str(paths.PARITY / 'fixture_translation_seed0.npz'))
OUT_TOL = 1e-4  # The README's fail line (see the docstring).
PRE_TANH_TOL = 1e-5
GRAD_TOL = 2e-3
NORM_GRAD_L2_TOL = 2e-2


def _key_list(strings):
  entries = []
  for line in strings:
    name, shape, *dtype = str(line).split('\t')
    entries.append((name, tuple(int(s) for s in shape.split(',') if s),
                    dtype[0] if dtype else 'float32'))
  return entries


def _nhwc(x):
  return np.asarray(x).transpose(0, 2, 3, 1)


def _is_encoder_norm_scale(path):
  return path[0].startswith('conv') and path[-2:] == ('norm', 'scale')


@pytest.fixture(scope='module')
def fixture():
  with np.load(FIXTURE) as z:
    return {k: z[k] for k in z.files}


@pytest.fixture(scope='module')
def nets(fixture):
  z = fixture
  dw = pu.deterministic_weights()
  g_sd = dw.make_state_dict(_key_list(z['keys/generator']),
                            int(z['meta/seed']))
  d_sd = dw.make_state_dict(_key_list(z['keys/discriminator']),
                            int(z['meta/discriminator_seed']))
  assert dw.state_dict_crc32(g_sd) == int(z['meta/generator_crc32'])
  assert dw.state_dict_crc32(d_sd) == int(z['meta/discriminator_crc32'])
  ngf = int(z['meta/ngf'])
  size = z['inputs'].shape[-1]
  generator = models.Generator(exchange.get('bn_threshold', threshold=1e-2),
                               ngf=ngf, num_downs=int(np.log2(size)))
  ndf = d_sd['conv1.conv.module.weight'].shape[0]
  discriminator = models.Discriminator(ndf=ndf)
  x = jnp.asarray(z['inputs'].transpose(0, 1, 3, 4, 2))
  y = jnp.asarray(_nhwc(z['target']))
  g_vars = convert.from_torch_state_dict(
      g_sd, 'generator', jax.eval_shape(generator.init, jax.random.key(0), x))
  d_vars = convert.from_torch_state_dict(
      d_sd, 'discriminator',
      jax.eval_shape(discriminator.init, jax.random.key(0), x, y))
  return dict(generator=generator, discriminator=discriminator, g=g_vars,
              d=d_vars, x=x, y=y, g_sd=g_sd, d_sd=d_sd)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _train_forward(generator, discriminator, g_vars, d_vars, x, y):
  """Training mode without dropout: outputs, activations, D, losses, grads."""
  rest = {'batch_stats': g_vars['batch_stats']}

  def loss_fn(params):
    out, inter = generator.apply({'params': params, **rest}, x, train=True,
                                 mutable=['intermediates'])
    fake = discriminator.apply(d_vars, x, out['outputs'], train=True)
    g = losses.generator_losses(fake, out['outputs'], out['ensemble'], y)
    return g['g_gan'] + g['g_l1'], (out, inter['intermediates'], g, fake)

  grads, (out, inter, g, fake) = jax.grad(loss_fn, has_aux=True)(
      g_vars['params'])
  tx = sparsity.add_l1_subgradient(SLIM_COEF, _is_encoder_norm_scale)
  grads, _ = tx.update(grads, tx.init(g_vars['params']), g_vars['params'])
  real = discriminator.apply(d_vars, x, y, train=True)
  slim = SLIM_COEF * sparsity.l1_value(g_vars['params'],
                                       _is_encoder_norm_scale)
  return out, inter, g, real, fake, grads, slim


@pytest.fixture(scope='module')
def train_run(nets):
  n = nets
  return jax.device_get(_train_forward(n['generator'], n['discriminator'],
                                       n['g'], n['d'], n['x'], n['y']))


def _close(ours, ref, tol=OUT_TOL):
  ref = np.asarray(ref)
  err = np.abs(np.asarray(ours) - ref).max() / np.abs(ref).max()
  assert err <= tol, f'relative error {err:.2e} > {tol:.0e}'
  return err


def test_parameter_counts_equal_the_official(nets):
  count = lambda sd: sum(int(np.prod(v.shape)) for k, v in sd.items()
                         if not k.endswith(('running_mean', 'running_var',
                                            'num_batches_tracked')))
  assert models.parameter_count(nets['g']['params']) == count(nets['g_sd'])
  assert models.parameter_count(nets['d']['params']) == count(nets['d_sd'])
  if int(nets['g']['params']['conv1']['conv']['kernel'].shape[-1]) == 64:
    assert count(nets['g_sd']) == 54_431_633
    assert count(nets['d_sd']) == 2_769_731


def test_training_mode_outputs_match(train_run, fixture):
  out = train_run[0]
  for m in range(out['outputs'].shape[0]):
    _close(out['outputs'][m], _nhwc(fixture[f'train_nodropout/output/{m}']))
  m = out['outputs'].shape[0]
  _close(out['ensemble'], _nhwc(fixture[f'train_nodropout/output/{m}']))
  np.testing.assert_allclose(out['alpha'], fixture['train_nodropout/alpha_soft'],
                             atol=1e-6)


def test_encoder_activations_match(train_run, fixture):
  inter = train_run[1]
  keys = sorted({k.split('/')[1] for k in fixture
                 if k.startswith('train_nodropout/conv')})
  assert keys, 'fixture has no encoder activations'
  for block in keys:
    ours = inter[f'{block}_out'][0]
    for m in range(ours.shape[0]):
      _close(ours[m], _nhwc(fixture[f'train_nodropout/{block}/{m}']))
  pre_tanh = inter[f'deconv{len(keys) + 1}_out'][0]
  for m in range(pre_tanh.shape[0]):
    _close(pre_tanh[m], _nhwc(fixture[f'train_nodropout/deconv'
                                      f'{len(keys) + 1}/{m}']), PRE_TANH_TOL)


def test_exchange_masks_match(nets, fixture):
  scales = models.in_scales(nets['g']['params'])
  masked = sorted(k for k in fixture if k.startswith('mask/'))
  assert {k.split('/')[1] for k in masked} == set(scales)
  for key in masked:
    _, site, m = key.split('/')
    np.testing.assert_array_equal(np.abs(scales[site][int(m)]) < 1e-2,
                                  fixture[key])


def test_discriminator_outputs_match(train_run, fixture):
  real, fake = train_run[3], train_run[4]
  for m in range(real.shape[0]):
    _close(jax.nn.sigmoid(real[m]), fixture[f'disc/real/{m}'][:, 0])
    _close(jax.nn.sigmoid(fake[m]), fixture[f'disc/fake/{m}'][:, 0])


def test_losses_match(train_run, fixture):
  g, real, fake, slim = train_run[2], train_run[3], train_run[4], train_run[6]
  d_loss = losses.discriminator_loss(real, fake)
  for ours, key in ((d_loss, 'loss/d'), (g['g_gan'], 'loss/g_gan'),
                    (g['g_l1'], 'loss/g_l1'), (slim, 'loss/g_slim'),
                    (g['g_gan'] + g['g_l1'] + slim, 'loss/g')):
    np.testing.assert_allclose(float(ours), float(fixture[key]), rtol=1e-5,
                               err_msg=key)


def _flax_grad(grads, key):
  collection, path, modality = convert._MAPPERS['generator'](key)
  assert collection == 'params'
  value = np.asarray(grads[path[0]] if len(path) == 1 else
                     grads[path[0]][path[1]][path[2]])
  if modality is not None:
    value = value[modality]
  if path[-1] == 'kernel':
    value = np.transpose(value, (3, 2, 0, 1))
  return value


def _grad_keys(fixture):
  return [k[len('grad/'):] for k in fixture if k.startswith('grad/')]


def _is_used_norm(key):
  return '.insnorm_' in key and not key.startswith(('conv1.', 'conv8.'))


def test_well_conditioned_gradients_match(train_run, fixture):
  keys = [k for k in _grad_keys(fixture) if not _is_used_norm(k)]
  assert 'alpha' in keys and 'conv1.conv.module.weight' in keys
  for key in keys:
    ref, ours = fixture[f'grad/{key}'], _flax_grad(train_run[5], key)
    err = np.abs(ours - ref).max() / np.abs(ref).max()
    assert err <= GRAD_TOL, f'{key}: relative error {err:.2e}'


def test_norm_gradients_match(train_run, fixture):
  keys = [k for k in _grad_keys(fixture) if _is_used_norm(k)]
  assert len(keys) > 10
  for key in keys:
    ref, ours = fixture[f'grad/{key}'], _flax_grad(train_run[5], key)
    err = np.linalg.norm(ours - ref) / np.linalg.norm(ref)
    assert err <= NORM_GRAD_L2_TOL, f'{key}: relative L2 error {err:.2e}'


def test_exchanged_channels_get_only_the_l1_subgradient(nets, train_run,
                                                        fixture):
  """Where modality m gives channel c away and no one takes it back, its
  gamma gets coef * sign(gamma) on its own L1 slice and 0 elsewhere, and its
  beta exactly 0, in the official gradients and here."""
  grads, params = train_run[5], nets['g']['params']
  checked = 0
  for site, scale in models.in_scales(params).items():
    scale = np.asarray(scale)
    mask = np.abs(scale) < 1e-2
    num, channels = scale.shape
    for m in range(num):
      given = mask[m] & ~np.delete(mask, m, axis=0).any(axis=0)
      own = np.zeros(channels, bool)
      own[m * channels // num:(m + 1) * channels // num] = True
      expected = np.where(own, SLIM_COEF * np.sign(scale[m]), 0.0)[given]
      base = f'{site}.insnorm_conv.insnorm_{m}'
      for ours in (grads[site]['norm']['scale'][m],
                   fixture[f'grad/{base}.weight']):
        np.testing.assert_allclose(np.asarray(ours)[given], expected,
                                   rtol=1e-6, atol=1e-10)
      for ours in (grads[site]['norm']['bias'][m],
                   fixture[f'grad/{base}.bias']):
        np.testing.assert_array_equal(np.asarray(ours)[given], 0.0)
      checked += int(given.sum())
  assert checked > 0


def test_running_statistics_and_eval_mode_match(nets, fixture):
  """The fixture's ``eval()`` outputs follow its one training-mode forward,
  which moved the running statistics: one training forward here, with
  PyTorch's update (unbiased per-image variance, momentum 0.1), then the
  running-statistics forward matches."""
  n = nets
  _, stats = jax.jit(functools.partial(
      n['generator'].apply, train=True, mutable=['batch_stats']))(
          n['g'], n['x'])
  moved = {'params': n['g']['params'], 'batch_stats': stats['batch_stats']}
  out = jax.jit(functools.partial(
      n['generator'].apply, use_running_average=True))(moved, n['x'])
  out = jax.device_get(out)
  for m in range(out['outputs'].shape[0]):
    _close(out['outputs'][m], _nhwc(fixture[f'eval/output/{m}']))
  _close(out['ensemble'],
         _nhwc(fixture[f'eval/output/{out["outputs"].shape[0]}']))


def test_export_restores_the_official_state_dict(nets):
  for network, variables, sd in (('generator', nets['g'], nets['g_sd']),
                                 ('discriminator', nets['d'], nets['d_sd'])):
    back = convert.to_torch_state_dict(variables, network)
    assert sorted(back) == sorted(sd)
    for key, value in sd.items():
      if key.endswith('num_batches_tracked'):
        continue
      np.testing.assert_array_equal(back[key], value, err_msg=key)
