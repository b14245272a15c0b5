"""The L1 transform and value, the schedules and the two-group SGD.

L1 pieces: ``core.sparsity``; schedules and SGD: ``training.optimizers``;
the segmentation recipe binding them: ``tasks.segmentation.optim``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cen_jax.core import sparsity
from cen_jax.tasks.segmentation import optim
from cen_jax.training import optimizers


def _params():
  return {
      'encoder': {
          'layer1_0': {
              'bn2': {'scale': jnp.array([[0.5, -0.2, 0.0, 0.3, 0.1],
                                          [-1.0, 0.4, -0.3, 0.0, 2.0]]),
                      'bias': jnp.ones((2, 5))},
              'bn1': {'scale': jnp.ones((2, 5))},
          },
      },
      'decoder': {'clf_conv': {'kernel': jnp.ones((3,))}},
      'alpha': jnp.ones((2,)),
  }


def test_slices_are_disjoint_and_official_for_two_modalities():
  # C = 5: rgb gets [0, 2), depth [2, 5) (official: first C//2, the rest).
  np.testing.assert_array_equal(sparsity.slice_mask(2, 5, 'slices'),
                                [[1, 1, 0, 0, 0], [0, 0, 1, 1, 1]])
  np.testing.assert_array_equal(sparsity.slice_mask(3, 6, 'slices'),
                                [[1, 1, 0, 0, 0, 0], [0, 0, 1, 1, 0, 0],
                                 [0, 0, 0, 0, 1, 1]])
  assert sparsity.slice_mask(2, 5, 'all').sum() == 10


def test_slices_within_groups_and_no_penalty_for_a_lone_stream():
  # The passes of the predicted-depth core: stream 0 alone, then 1 and 2.
  np.testing.assert_array_equal(
      sparsity.slice_mask(3, 4, 'slices', groups=((0,), (1, 2))),
      [[0, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1]])
  # One group of all is the default.
  np.testing.assert_array_equal(
      sparsity.slice_mask(3, 6, 'slices', groups=((0, 1, 2),)),
      sparsity.slice_mask(3, 6, 'slices'))
  assert sparsity.slice_mask(3, 4, 'all', groups=((0,), (1, 2))).sum() == 12
  with pytest.raises(ValueError, match=r'not a partition of the 3'):
    sparsity.slice_mask(3, 4, 'slices', groups=((0,), (1,)))


def test_l1_value_by_hand():
  # rgb slice: |0.5| + |-0.2| = 0.7; depth slice: 0.3 + 0 + 2 = 2.3.
  np.testing.assert_allclose(optim.l1_value(_params()), 3.0, rtol=1e-7)
  # all: 1.1 + 3.7.
  np.testing.assert_allclose(optim.l1_value(_params(), 'all'), 4.8, rtol=1e-6)


def test_l1_transform_adds_the_subgradient_on_bn2_scales_only():
  params = _params()
  grads = jax.tree.map(jnp.zeros_like, params)
  tx = optim.add_l1_subgradient(0.1, 'slices')
  out, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(
      out['encoder']['layer1_0']['bn2']['scale'],
      [[0.1, -0.1, 0, 0, 0], [0, 0, -0.1, 0.0, 0.1]])
  np.testing.assert_array_equal(out['encoder']['layer1_0']['bn2']['bias'], 0)
  np.testing.assert_array_equal(out['encoder']['layer1_0']['bn1']['scale'], 0)
  np.testing.assert_array_equal(out['alpha'], 0)


def test_stage_schedule_is_exact():
  sched = optimizers.make_schedule('stages', base_lrs=(5e-4, 2.5e-4, 1e-4),
                              boundaries=(10, 20), total_steps=30)
  got = [float(sched(s)) for s in (0, 9, 10, 19, 20, 29)]
  assert got == [np.float32(v) for v in (5e-4, 5e-4, 2.5e-4, 2.5e-4, 1e-4,
                                         1e-4)]
  with pytest.raises(ValueError, match='stages'):
    optimizers.make_schedule('linear', base_lrs=(1.0,), boundaries=(),
                        total_steps=3)


def test_sgd_matches_pytorch_and_resets_momentum_at_stage_starts():
  """Two groups, coupled weight decay, momentum dropped at step 2."""
  params = {'encoder': jnp.array([1.0]), 'decoder': jnp.array([2.0])}
  lrs = {'encoder': optimizers.stage_schedule((0.1, 0.1), (2,)),
         'decoder': optimizers.stage_schedule((1.0, 1.0), (2,))}
  tx = optim.make_optimizer(lrs, momentum=0.9, weight_decay=0.5, l1_coef=0.0,
                            l1_scope='slices', reset_steps=(2,))
  state = tx.init(params)
  grad = {'encoder': jnp.array([1.0]), 'decoder': jnp.array([1.0])}
  p_enc, buf = 1.0, 0.0
  for step in range(3):
    updates, state = tx.update(grad, state, params)
    params = optax.apply_updates(params, updates)
    # PyTorch: d = g + wd * p; buf = 0.9 * buf + d (reset at step 2).
    buf = (0.0 if step == 2 else 0.9 * buf) + (1.0 + 0.5 * p_enc)
    p_enc -= 0.1 * buf
    np.testing.assert_allclose(params['encoder'], [p_enc], rtol=1e-6)
