"""Fusion with a predicted modality: the streams' passes, by construction.

Streams ``(rgb, depth), (rgb, semseg), (pred:depth, semseg)``: pass 1 runs
the depth stream, pass 2 the two semseg streams, the second reading pass 1's
depth ensemble. One set of variables holds all three streams.
"""

import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cen_jax.tasks.multitask import core
from cen_jax.tasks.multitask import streams as streams_lib
from cen_jax.tasks.segmentation import losses as seg_losses

TINY = dict(depth='tiny', num_classes=5, exchange='bn_threshold', width=8,
            decoder_features=(16, 8), dropout_rate=0.0, bn_mode='batch')
STREAMS = (('rgb', 'depth'), ('rgb', 'semseg'), ('pred:depth', 'semseg'))


def _streams(streams=STREAMS):
  return streams_lib.parse(streams, num_classes=5,
                           available_inputs=('rgb', 'depth'))


@functools.lru_cache(maxsize=None)
def _core_and_variables():
  c = core.StreamCore(TINY, _streams())
  v = jax.jit(functools.partial(c.init, train=False))(
      jax.random.key(0), jnp.zeros((3, 2, 32, 32, 3)))
  # Spread the parameters so that every stream's BN differs; the running
  # statistics stay (mean 0, variance 1).
  rng = np.random.default_rng(1)
  params = jax.tree.map(
      lambda a: a + rng.normal(0, 0.1, a.shape).astype(a.dtype), v['params'])
  return c, {**v, 'params': params}


def test_parse_splits_the_streams_into_passes():
  s = _streams()
  assert s.passes == ((0,), (1, 2))
  assert s.names == ('rgb_depth', 'rgb_semseg', 'pred_depth_semseg')
  assert s.modalities == ('rgb',)
  assert s.input_index == (0, 0, -1)
  assert s.predicted == (None, None, 'depth')
  assert _streams(STREAMS[:2]).passes == ((0, 1),)


@pytest.mark.parametrize('streams, message', [
    ((('pred:semseg', 'depth'),), r"only the predictions of \('depth', "
                                  r"'normals'\)"),
    ((('pred:depth', 'depth'),), 'predicts the task its input comes from'),
    ((('rgb', 'semseg'), ('pred:depth', 'semseg')),
     "'pred:depth' needs a stream that predicts 'depth' from a real input"),
    ((('rgb', 'depth'), ('pred:depth', 'normals'), ('pred:normals', 'semseg')),
     'chains of predicted inputs are not supported'),
])
def test_bad_predicted_inputs_are_named(streams, message):
  with pytest.raises(ValueError, match=message):
    _streams(streams)


def test_one_set_of_variables_for_all_streams():
  _, v = _core_and_variables()
  p = v['params']
  assert p['encoder']['layer1_0']['bn2']['scale'].shape == (3, 8)
  assert v['batch_stats']['encoder']['bn1']['mean'].shape == (3, 8)
  assert p['encoder']['conv1']['kernel'].shape[0] == 7  # shared, no S axis
  assert set(k for k in p['decoder'] if k.startswith('clf')) == {
      'clf_conv_depth', 'clf_conv_semseg'}
  assert p['alpha_depth'].shape == (1,) and p['alpha_semseg'].shape == (2,)
  # Splitting into the passes and merging back is the identity.
  parts = [((0,), core.subset(v, (0,), ('depth',))),
           ((1, 2), core.subset(v, (1, 2), ('semseg',)))]
  merged = core.merge(parts, 3)
  assert jax.tree.structure(merged) == jax.tree.structure(v)
  jax.tree.map(np.testing.assert_array_equal, merged, v)


def test_pass_two_reads_the_predicted_depth_and_pass_one_ignores_pass_two():
  c, v = _core_and_variables()
  x = jax.random.normal(jax.random.key(2), (3, 2, 32, 32, 3))
  apply = jax.jit(functools.partial(c.apply, train=False))
  out = apply(v, x)
  # The row of the predicted-input stream is not read.
  same = apply(v, x.at[2].set(7.0))
  np.testing.assert_array_equal(same['streams']['semseg'],
                                out['streams']['semseg'])
  # Pass 2 by hand: its CEN on rows (rgb, depth prediction as an input).
  m2 = c.models[1]
  pred = core.as_input('depth', out['ensemble']['depth'], (32, 32))
  assert pred.shape == (2, 32, 32, 3)
  np.testing.assert_array_equal(pred[..., 0], pred[..., 2])
  by_hand = jax.jit(functools.partial(m2.apply, train=False))(
      core.subset(v, (1, 2), ('semseg',)), jnp.stack([x[1], pred]))
  np.testing.assert_allclose(out['streams']['semseg'],
                             by_hand['streams']['semseg'], rtol=1e-5,
                             atol=1e-5)
  # Pass 1 does not see pass 2's BNs: change stream 2's, depth is the same.
  bumped = jax.tree_util.tree_map_with_path(
      lambda path, a: a.at[2].add(1.0) if core.is_per_stream(
          [k.key for k in path[1:]]) else a, v)
  other = apply(bumped, x)
  np.testing.assert_array_equal(other['streams']['depth'],
                                out['streams']['depth'])
  assert not np.allclose(other['streams']['semseg'], out['streams']['semseg'])


def test_the_predicted_input_passes_no_gradient_to_the_depth_head():
  c, v = _core_and_variables()
  x = jax.random.normal(jax.random.key(3), (3, 2, 32, 32, 3))
  labels = jnp.zeros((2, 32, 32), jnp.int32)

  def semseg_loss(params):
    out, _ = c.apply({**v, 'params': params}, x, train=True,
                     mutable=['batch_stats'])
    return seg_losses.cross_entropy(out['streams']['semseg'][1], labels)

  grads = jax.jit(jax.grad(semseg_loss))(v['params'])
  flat = flax.traverse_util.flatten_dict(grads)
  assert all(not np.any(g) for k, g in flat.items()
             if k[:2] == ('decoder', 'clf_conv_depth'))
  # ... while the shared convs and the semseg head do learn from it.
  assert np.any(grads['decoder']['clf_conv_semseg']['kernel'])
  assert np.any(grads['encoder']['conv1']['kernel'])
  # Stream 0's BNs only feed pass 1's depth: no semseg gradient either.
  assert not np.any(grads['encoder']['layer1_0']['bn2']['scale'][0])
  assert np.any(grads['encoder']['layer1_0']['bn2']['scale'][2])
