"""The port against the official PyTorch model (../shared/parity fixtures).

ResNet-50, weight seed 0, batch 2, 64x96, eval mode (frozen BN, exchange on,
no dropout). Tolerances are the fixture README's float32 column.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cen_jax.tasks.segmentation import convert
from cen_jax.tasks.segmentation import losses
from cen_jax.tasks.segmentation import models
from cen_jax.tasks.segmentation import optim
from tests import parity_utils as pu

LAMDA = 2e-4
NUM_OUTPUTS = 3  # rgb, depth, ensemble: the official loss adds L1 per output.
MODALITIES = ('rgb', 'depth')


def _model():
  return models.build(dict(depth=50, num_classes=40, exchange='bn_threshold',
                           exchange_kwargs=dict(threshold=0.02),
                           bn_mode='frozen'))


@functools.partial(jax.jit, static_argnums=0)
def _forward_and_grads(model, variables, x, labels):
  params = variables['params']
  rest = {k: v for k, v in variables.items() if k != 'params'}

  def loss_fn(p):
    out, state = model.apply({'params': p, **rest}, x, train=False,
                             mutable=['intermediates'])
    ce = losses.segmentation_losses(out, labels)
    return ce['ce_total'], (out, ce, state['intermediates'])

  grads, (out, ce, inter) = jax.grad(loss_fn, has_aux=True)(params)
  tx = optim.add_l1_subgradient(NUM_OUTPUTS * LAMDA, 'slices')
  grads, _ = tx.update(grads, tx.init(params), params)
  return out, ce, inter, grads, optim.l1_value(params)


@pytest.fixture(scope='module')
def run():
  z = pu.load_fixture()
  sd = pu.official_state_dict(50, int(z['meta/seed']))
  assert pu.deterministic_weights().state_dict_crc32(sd) == int(
      z['meta/weights_crc32'])
  model = _model()
  x = jnp.asarray(z['inputs_mhwc'])
  template = jax.eval_shape(functools.partial(model.init, train=False),
                            jax.random.key(0), x)
  variables = convert.from_torch_state_dict(sd, 2, template=template)
  out, ce, inter, grads, l1 = jax.device_get(_forward_and_grads(
      model, variables, x, jnp.asarray(z['labels'], jnp.int32)))
  return dict(z=z, out=out, ce=ce, inter=inter['encoder'], grads=grads,
              l1=l1, variables=variables)


def _close(actual, ref, rel):
  np.testing.assert_allclose(actual, ref, rtol=0,
                             atol=rel * np.abs(ref).max())


def test_logits_match_official(run):
  z, out = run['z'], run['out']
  for m, name in enumerate(MODALITIES):
    _close(out['modality_logits'][m], pu.nhwc(z[f'logits_{name}']), 1e-5)
  _close(out['ensemble_logits'], pu.nhwc(z['logits_ensemble']), 1e-5)
  np.testing.assert_allclose(out['alpha'], z['alpha_soft'], rtol=0, atol=1e-6)


def test_stage_activations_match_official(run):
  z, inter = run['z'], run['inter']
  for level in ('stem', 'l1', 'l2', 'l3', 'l4'):
    (act,) = inter[level]
    for m, name in enumerate(MODALITIES):
      _close(act[m], pu.nhwc(z[f'act/{level}/{name}']), 1e-5)
  block = inter['layer1_0']
  for key, ref in (('bn2_out', 'layer1.0.bn2'),
                   ('bn2_exchanged', 'layer1.0.bn2_exchanged')):
    (act,) = block[key]
    for m, name in enumerate(MODALITIES):
      _close(act[m], pu.nhwc(z[f'act/{ref}/{name}']), 1e-5)


def test_exchange_masks_match_official(run):
  z = run['z']
  scales = models.bn2_scales(run['variables']['params'])
  assert len(scales) == 16
  for site, scale in scales.items():
    for m, name in enumerate(MODALITIES):
      np.testing.assert_array_equal(np.abs(scale[m]) < 0.02,
                                    z[f'mask/{site}.bn2/{name}'])


def test_exchange_is_an_exact_swap_in_the_port(run):
  (pre,) = run['inter']['layer1_0']['bn2_out']
  (post,) = run['inter']['layer1_0']['bn2_exchanged']
  z = run['z']
  for m, name in enumerate(MODALITIES):
    mask = z[f'mask/layer1.0.bn2/{name}']
    np.testing.assert_array_equal(post[m][..., mask], pre[1 - m][..., mask])
    np.testing.assert_array_equal(post[m][..., ~mask], pre[m][..., ~mask])
  assert np.flatnonzero(z['mask/layer1.0.bn2/rgb']).tolist() == [
      1, 5, 8, 11, 32, 42, 48]


def test_losses_match_official(run):
  z, ce, l1 = run['z'], run['ce'], run['l1']
  checks = {
      'loss_ce_rgb': ce['ce_modality'][0],
      'loss_ce_depth': ce['ce_modality'][1],
      'loss_ce_ensemble': ce['ce_ensemble'],
      'l1_norm': l1,
      'loss_l1_once': LAMDA * l1,
      'loss_total': ce['ce_total'] + NUM_OUTPUTS * LAMDA * l1,
  }
  for name, value in checks.items():
    np.testing.assert_allclose(value, z[name], rtol=1e-5, err_msg=name)


def _port_grad(grads, key):
  collection, path, modality = convert.map_key(key)
  assert collection == 'params'
  value = grads
  for p in path:
    value = value[p]
  value = np.asarray(value)
  if modality is not None:
    return value[modality]
  if value.ndim == 4:
    return value.transpose(3, 2, 0, 1)  # HWIO -> OIHW
  return value


def test_gradients_match_official(run):
  z, grads = run['z'], run['grads']
  names = [k[len('grad/'):] for k in z if k.startswith('grad/')]
  assert len(names) == 12
  for key in names:
    ref = z[f'grad/{key}']
    tight = key == 'alpha' or key.startswith('clf_conv')
    _close(_port_grad(grads, key), ref, 1e-4 if tight else 2e-3)


def test_exchanged_channels_get_only_the_l1_gradient(run):
  """RGB-exchanged channels that depth does not take back: +-6e-4 or 0."""
  z, grads = run['z'], run['grads']
  g_scale = _port_grad(grads, 'layer1.0.bn2.bn_0.weight')
  g_bias = _port_grad(grads, 'layer1.0.bn2.bn_0.bias')
  gamma = run['variables']['params']['encoder']['layer1_0']['bn2']['scale'][0]
  own = z['mask/layer1.0.bn2/rgb'] & ~z['mask/layer1.0.bn2/depth']
  half = np.arange(64) < 32
  coef = NUM_OUTPUTS * LAMDA
  np.testing.assert_allclose(g_scale[own & half],
                             coef * np.sign(gamma[own & half]), atol=1e-10)
  np.testing.assert_array_equal(g_scale[own & ~half], 0.0)
  np.testing.assert_array_equal(g_bias[own], 0.0)
