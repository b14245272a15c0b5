"""benchmarks/op_breakdown.py names XLA ops after what the model does.

Known answers: a conv layer's gradient compiled both ways has exactly one
forward, one input-gradient and one weight-gradient convolution (or
matmuls in their scopes), and a pool is a pool.
"""

import collections

import jax
import jax.numpy as jnp
import pytest

from benchmarks import op_breakdown
from cen_jax.core import kernels


def _categories(fn, *args) -> collections.Counter:
  """Category of every top-level op of the compiled ``fn`` that does work."""
  compiled = jax.jit(fn).lower(*args).compile()
  computations, instructions = op_breakdown.parse_hlo(compiled.as_text())
  entry = [name for name in computations if name.startswith('main')]
  found = collections.Counter()
  for comp in entry:
    for inst in computations[comp]:
      if inst.opcode in ('parameter', 'tuple', 'get-tuple-element',
                         'bitcast', 'constant'):
        continue
      name = next(n for n, i in instructions.items() if i is inst)
      found[op_breakdown.categorize(
          op_breakdown._contents(name, computations, instructions))] += 1  # pylint: disable=protected-access
  return found


@pytest.mark.parametrize('impl', ['xla', 'cpu'])
def test_conv_gradient_ops_are_told_apart(impl):
  x = jnp.ones((2, 8, 8, 16))
  w = jnp.ones((3, 3, 16, 16))
  conv = kernels.conv_general_dilated(impl)

  def loss(x_, w_):
    y = conv(x_, w_, (1, 1), ((1, 1), (1, 1)),
             dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    return jnp.sum(jnp.tanh(y))

  found = _categories(jax.grad(loss, argnums=(0, 1)), x, w)
  assert found['conv forward'] >= 1
  assert found['conv input grad'] >= 1
  assert found['conv weight grad'] >= 1


@pytest.mark.parametrize('impl', ['xla', 'cpu'])
def test_pool_gradient_is_pooling(impl):
  found = _categories(jax.grad(
      lambda x: jnp.sum(kernels.max_pool(x, 5, 1, impl) ** 2)),
                      jnp.ones((1, 8, 8, 4)))
  assert found['pooling'] >= 1
  assert not any('conv' in c for c in found)


def test_table_lists_every_category_with_its_share():
  totals = dict.fromkeys(op_breakdown.CATEGORIES, 0.0)
  totals.update({'conv forward': 3.0, 'pooling': 1.0})
  text = op_breakdown.table(totals)
  assert 'conv forward' in text.splitlines()[1]
  assert '75.0%' in text and '25.0%' in text
  assert text.splitlines()[-1].split()[-1] == '4.000'
  assert len(text.splitlines()) == len(op_breakdown.CATEGORIES) + 2


def test_traceable_options_put_every_convolution_in_a_timed_library_call():
  """Eigen convolutions (the CPU kernels' choice) run asynchronously."""
  x, w = jnp.ones((1, 16, 16, 64)), jnp.ones((3, 3, 64, 64))

  def fn(x_, w_):
    y = jax.lax.conv_general_dilated(
        x_, w_, (1, 1), ((1, 1), (1, 1)),
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    return y.reshape(-1, 64) @ w_[0, 0]

  lowered = jax.jit(fn, compiler_options=kernels.compiler_options(
      'cpu')).lower(x, w)
  assert op_breakdown.ynn_ops(lowered.compile().as_text()) == ['dot']
  assert op_breakdown.ynn_ops(lowered.compile(
      compiler_options=op_breakdown.traceable_options()).as_text()) == [
          'convolution', 'dot']
