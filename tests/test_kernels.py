"""The CPU formulations of cen_jax.core.kernels equal the plain ones.

Known answers: conv weight gradients and max-pool gradients worked out by
explicit loops in NumPy (the max-pool one with PyTorch's rule: each window's
gradient goes to its first maximum in row-major order), and the two
formulations against each other on a whole model.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import op_breakdown
from cen_jax.core import kernels
from cen_jax.core import programs
from cen_jax.tasks.segmentation import losses
from cen_jax.tasks.segmentation import models
from cen_jax.training import loop
from cen_jax.training import parallel

_DIMS = ('NHWC', 'HWIO', 'NHWC')


def _numpy_conv_grads(x, w, g, stride, pad):
  """dL/dx and dL/dw of a cross-correlation by loops, for L = <conv, g>."""
  n, h, wd, c = x.shape
  kh, kw, _, d = w.shape
  xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0))).astype(np.float64)
  dxp = np.zeros_like(xp)
  dw = np.zeros(w.shape, np.float64)
  for b in range(n):
    for oy in range(g.shape[1]):
      for ox in range(g.shape[2]):
        for i in range(kh):
          for j in range(kw):
            y, xx = oy * stride + i, ox * stride + j
            dw[i, j] += np.outer(xp[b, y, xx], g[b, oy, ox])
            dxp[b, y, xx] += w[i, j] @ g[b, oy, ox]
  return dxp[:, pad:pad + h, pad:pad + wd], dw


@pytest.mark.parametrize('kernel,stride,cin', [
    (1, 1, 16), (1, 2, 16), (3, 1, 16), (3, 2, 16), (3, 1, 3), (7, 2, 3)])
def test_conv_gradients_match_loops_in_both_formulations(kernel, stride, cin):
  rng = np.random.default_rng(kernel * 10 + stride + cin)
  x = rng.standard_normal((2, 7, 9, cin)).astype(np.float32)
  w = rng.standard_normal((kernel, kernel, cin, 5)).astype(np.float32)
  pad = kernel // 2
  padding = ((pad, pad), (pad, pad))
  out_shape = jax.eval_shape(
      lambda: jax.lax.conv_general_dilated(x, w, (stride, stride), padding,
                                           dimension_numbers=_DIMS)).shape
  g = rng.standard_normal(out_shape).astype(np.float32)
  want_dx, want_dw = _numpy_conv_grads(x, w, g, stride, pad)
  outs = {}
  for impl in ('xla', 'cpu'):
    conv = kernels.conv_general_dilated(impl)
    f = lambda x_, w_, conv=conv: conv(x_, w_, (stride, stride), padding,
                                       dimension_numbers=_DIMS)
    y, vjp = jax.vjp(f, x, w)
    dx, dw = vjp(jnp.asarray(g))
    np.testing.assert_allclose(dx, want_dx, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(dw, want_dw, rtol=1e-5, atol=1e-4)
    outs[impl] = y
  # Same forward op: bit for bit.
  np.testing.assert_array_equal(outs['xla'], outs['cpu'])


def test_cpu_formulation_is_used_only_where_it_applies():
  x = jnp.ones((1, 4, 4, 16))
  padding = ((1, 1), (1, 1))

  def jaxpr(impl, w):
    conv = kernels.conv_general_dilated(impl)
    return str(jax.make_jaxpr(
        lambda w_: conv(x, w_, (1, 1), padding, dimension_numbers=_DIMS))(w))

  assert 'custom_vjp' in jaxpr('cpu', jnp.ones((3, 3, 16, 4)))
  assert 'custom_vjp' not in jaxpr('xla', jnp.ones((3, 3, 16, 4)))
  # The 7x7 stem shape keeps XLA's gradient.
  assert 'custom_vjp' not in jaxpr('cpu', jnp.ones((7, 7, 16, 4)))


def _numpy_max_pool_grad(x, g, window, stride):
  """PyTorch's rule: each window's gradient to its first maximum."""
  pad = window // 2
  n, h, w, c = x.shape
  xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)),
              constant_values=-np.inf)
  dxp = np.zeros_like(xp)
  for b in range(n):
    for ch in range(c):
      for oy in range(g.shape[1]):
        for ox in range(g.shape[2]):
          win = xp[b, oy * stride:oy * stride + window,
                   ox * stride:ox * stride + window, ch]
          i, j = np.unravel_index(np.argmax(win), win.shape)  # First max.
          dxp[b, oy * stride + i, ox * stride + j, ch] += g[b, oy, ox, ch]
  return dxp[:, pad:pad + h, pad:pad + w]


@pytest.mark.parametrize('window,stride', [(5, 1), (3, 2)])
def test_max_pool_values_and_gradients_are_identical_with_ties(window,
                                                                stride):
  rng = np.random.default_rng(window)
  # Small integers after a ReLU: most windows hold tied maxima.
  x = np.maximum(rng.integers(-3, 3, (2, 9, 11, 3)), 0).astype(np.float32)
  outs = {}
  for impl in ('xla', 'cpu'):
    y, vjp = jax.vjp(lambda x_, impl=impl: kernels.max_pool(
        x_, window, stride, impl), x)
    g = np.arange(1, y.size + 1, dtype=np.float32).reshape(y.shape)
    (dx,) = vjp(jnp.asarray(g))
    outs[impl] = (np.asarray(y), np.asarray(dx))
    np.testing.assert_array_equal(dx, _numpy_max_pool_grad(x, g, window,
                                                           stride))
  np.testing.assert_array_equal(outs['xla'][0], outs['cpu'][0])


def test_resolve():
  assert kernels.resolve('auto') == 'cpu'  # The tests run on the CPU.
  assert kernels.resolve('xla') == 'xla'
  with pytest.raises(ValueError, match='config.model.kernels'):
    kernels.resolve('cuda')
  with pytest.raises(ValueError, match='config.model.kernels'):
    models.build(dict(depth='tiny', num_classes=3, exchange='bn_threshold',
                      kernels='fast'))


@functools.partial(jax.jit, static_argnums=0)
def _loss_and_grads(model, variables, x, labels):
  def loss_fn(params):
    out = model.apply({**variables, 'params': params}, x, train=False)
    return losses.segmentation_losses(out, labels)['ce_total'], out
  return jax.value_and_grad(loss_fn, has_aux=True)(variables['params'])


def test_tiny_model_is_the_same_with_either_formulation():
  x = jax.random.normal(jax.random.key(1), (2, 2, 32, 40, 3))
  labels = jax.random.randint(jax.random.key(2), (2, 32, 40), 0, 5)
  results = {}
  for impl in ('xla', 'cpu'):
    model = models.build(dict(depth='tiny', num_classes=5, width=16,
                              decoder_features=(32, 16),
                              exchange='bn_threshold', kernels=impl))
    variables = programs.init(model, jax.random.key(0), x)
    results[impl] = jax.device_get(
        (variables, _loss_and_grads(model, variables, x, labels)))
  (v_xla, ((l_xla, o_xla), g_xla)) = results['xla']
  (v_cpu, ((l_cpu, o_cpu), g_cpu)) = results['cpu']
  # Same parameters (names, shapes, init), same logits bit for bit (the
  # forward ops are the same), gradients equal up to summation order.
  jax.tree.map(np.testing.assert_array_equal, v_xla, v_cpu)
  np.testing.assert_array_equal(o_xla['modality_logits'],
                                o_cpu['modality_logits'])
  np.testing.assert_array_equal(l_xla, l_cpu)
  for a, b in zip(jax.tree.leaves(g_xla), jax.tree.leaves(g_cpu)):
    np.testing.assert_allclose(b, a, rtol=0,
                               atol=1e-5 * max(np.abs(a).max(), 1e-6))


def test_add_relu_equals_relu_of_the_sum_with_relus_gradient():
  # Ties (y == -x), zeros, infinities and NaN, then random values.
  y = np.array([1., -1., 2., 0., -3., np.inf, -np.inf, np.nan, 5., -0.],
               np.float32)
  x = np.array([1., 1., -2., 0., 1., 1., 2., 1., np.inf, 0.], np.float32)
  rng = np.random.default_rng(0)
  y = np.concatenate([y, rng.standard_normal(50).astype(np.float32)])
  x = np.concatenate([x, np.maximum(rng.standard_normal(50), 0)
                      .astype(np.float32)])
  g = np.arange(1, y.size + 1, dtype=np.float32)
  want = np.maximum(y + x, 0)  # NaN stays NaN.
  want_grad = np.where(y + x > 0, g, 0)  # jax.nn.relu: 0 at 0.
  for impl in ('xla', 'cpu'):
    out, vjp = jax.vjp(lambda a, b, impl=impl: kernels.add_relu(a, b, impl),
                       jnp.asarray(y), jnp.asarray(x))
    np.testing.assert_array_equal(out, want)
    dy, dx = vjp(jnp.asarray(g))
    np.testing.assert_array_equal(dy, want_grad)
    np.testing.assert_array_equal(dx, want_grad)


def test_add_relu_keeps_each_block_output_instead_of_recomputing_it():
  """A K-block residual chain computes K ReLUs with 'cpu', not K(K+1)/2."""
  k = 6

  def chain(impl, x, ws):
    outs = []
    for i in range(k):
      x = kernels.add_relu(jnp.dot(x, ws[i]) * 0.5 + 1.0, x, impl)
      outs.append(x)
    # Every block output has several consumers, as in ResNet: the next
    # block's matmul and residual add, and here a sum.
    return sum(jnp.dot(o, ws[0]).sum() for o in outs)

  x, ws = jnp.ones((16, 8)), jnp.ones((k, 8, 8))
  counts = {}
  for impl in ('xla', 'cpu'):
    hlo = jax.jit(chain, static_argnums=0).lower(impl, x, ws).compile()
    counts[impl] = hlo.as_text().count(' maximum(')
  # relu(y + x) is fused into every consumer of the block's output, the
  # blocks before it included: XLA:CPU's quadratic recomputation.
  assert counts['xla'] == k * (k + 1) // 2
  assert counts['cpu'] == k


def _conv_then_dot(x, w, m):
  y = jax.lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)),
                                   dimension_numbers=_DIMS)
  return y.reshape(-1, y.shape[-1]) @ m


def test_cpu_compiler_options_give_convolutions_to_eigen_and_dots_to_ynn():
  assert kernels.compiler_options('xla') is None
  options = kernels.compiler_options('cpu')
  assert options == {'xla_cpu_experimental_ynn_fusion_type':
                     'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT'}
  assert kernels.compiler_options('auto') == options  # Tests run on CPU.
  rng = np.random.default_rng(0)
  # Big enough for XLA to give the conv to YNNPACK by default.
  x = rng.standard_normal((1, 16, 16, 64)).astype(np.float32)
  w = rng.standard_normal((3, 3, 64, 64)).astype(np.float32)
  m = rng.standard_normal((64, 32)).astype(np.float32)
  xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0))).astype(np.float64)
  conv = sum(np.einsum('nhwc,cd->nhwd', xp[:, i:i + 16, j:j + 16], w[i, j])
             for i in range(3) for j in range(3))
  want = conv.reshape(-1, 64) @ m
  ops = {}
  for name, opts in (('default', None), ('cpu', options)):
    compiled = jax.jit(_conv_then_dot, compiler_options=opts).lower(
        x, w, m).compile()
    ops[name] = op_breakdown.ynn_ops(compiled.as_text())
    np.testing.assert_allclose(compiled(x, w, m), want, rtol=1e-4,
                               atol=1e-3)
  assert ops == {'default': ['convolution', 'dot'], 'cpu': ['dot']}


def test_the_loop_compiles_train_and_eval_steps_with_the_tasks_options():
  """jit_train_step / jit_eval_step pass ``compiler_options`` to XLA."""
  options = kernels.compiler_options('cpu')
  x = np.ones((1, 16, 16, 64), np.float32)
  w = np.ones((3, 3, 64, 64), np.float32)
  mesh = parallel.make_mesh(jax.devices()[:1])

  class Owner:  # A task's and a trainer's relevant attributes.
    compiler_options = None

    @staticmethod
    def eval_step(variables, batch):
      return jnp.sum(_conv_then_dot(batch, variables, jnp.ones((64, 1))))

    @staticmethod
    def train_step(state, batch, rng):
      del rng
      return state, {'loss': Owner.eval_step(state, batch)}

  for opts, in_ynn in ((None, True), (options, False)):
    Owner.compiler_options = opts
    texts = [loop.jit_eval_step(Owner, mesh).lower(w, x).compile().as_text(),
             loop.jit_train_step(Owner, mesh).lower(
                 w, x, jax.random.key(0)).compile().as_text()]
    assert [('convolution' in op_breakdown.ynn_ops(t)) for t in texts] == [in_ynn] * 2
