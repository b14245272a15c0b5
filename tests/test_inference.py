"""Full-resolution logits, test-time augmentation and padding."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cen_jax.tasks.segmentation import inference
from cen_jax.core import resize
from tests import tiny

def _outputs(modality_logits):
  """A model-like output dict; the ensemble is the modality mean."""
  return {'modality_logits': modality_logits,
          'ensemble_logits': jnp.mean(modality_logits, axis=0),
          'alpha': jnp.full(modality_logits.shape[:1],
                            1 / modality_logits.shape[0])}


def _ramp_apply(variables, x):
  """Native-resolution logits ``x + w`` (w = column index): not mirror-safe."""
  del variables
  col = jnp.arange(x.shape[-2], dtype=x.dtype)[:, None]
  return _outputs(x + col)


def _subsample_apply(variables, x):
  """Quarter-resolution logits ``scale * x[..., ::4, ::4, :]``."""
  return _outputs(variables['scale'] * x[..., ::4, ::4, :])


def _size_apply(variables, x):
  """Constant logits ``[h, w, mean(x)]`` at a quarter of the pass's size."""
  del variables
  m, b, h, w, _ = x.shape
  values = jnp.stack([jnp.float32(h), jnp.float32(w), jnp.mean(x)])
  shape = (m, b, -(-h // 4), -(-w // 4), 3)
  return _outputs(jnp.broadcast_to(values, shape))


def test_scaled_size_rounds_half_up_and_keeps_one_pixel():
  assert inference.scaled_size((10, 12), 0.75) == (8, 9)
  assert inference.scaled_size((480, 640), 1.0) == (480, 640)
  assert inference.scaled_size((5, 5), 0.01) == (1, 1)


def test_single_scale_is_the_official_protocol_exactly():
  model, variables = tiny.model_and_variables()
  x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 1, 18, 22, 3)),
                  jnp.float32)

  @jax.jit
  def official(v, x):
    logits = model.apply(v, x, train=False)['ensemble_logits']
    return resize.resize_bicubic_cv2(logits, (18, 22))

  ours = jax.jit(functools.partial(inference.full_res_logits, model.apply),
                 static_argnames=('out_size', 'output'))
  want = official(variables, x)
  assert want.shape == (1, 18, 22, 5) and np.abs(want).max() < 100
  np.testing.assert_array_equal(ours(variables, x, out_size=(18, 22)), want)
  all_logits = ours(variables, x, out_size=(18, 22), output='all')
  assert all_logits.shape == (3, 1, 18, 22, 5)
  np.testing.assert_allclose(all_logits[2], want, rtol=1e-5, atol=1e-5)
  # The resize is linear: the ensemble is the alpha-softmax mix of the
  # resized modality logits.
  alpha = jax.nn.softmax(variables['params']['alpha'])
  np.testing.assert_allclose(
      alpha[0] * all_logits[0] + alpha[1] * all_logits[1], want,
      rtol=1e-5, atol=1e-5)
  assert not np.allclose(all_logits[0], all_logits[1], atol=1e-3)


def test_flip_of_a_mirror_symmetric_model_changes_nothing():
  # Subsampling 9 columns at 0, 4, 8 commutes with mirroring.
  x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 1, 9, 9, 4)),
                  jnp.float32)
  v = {'scale': jnp.float32(3.0)}
  plain = inference.full_res_logits(_subsample_apply, v, x, (9, 9))
  flipped = inference.full_res_logits(_subsample_apply, v, x, (9, 9),
                                      flip=True)
  np.testing.assert_array_equal(flipped, plain)
  ensemble = 3 * (x[0] + x[1])[:, ::4, ::4] / 2
  np.testing.assert_allclose(plain, resize.resize_bicubic_cv2(ensemble,
                                                              (9, 9)),
                             rtol=1e-5, atol=1e-5)


def test_flip_mirrors_the_logits_back_before_averaging():
  # f(x)[w] = x[w] + w; the mirror pass gives x[w] + (W - 1 - w) once
  # mirrored back, so the average is x + (W - 1) / 2 = x + 2 for W = 5.
  x = jnp.asarray(np.random.default_rng(3).normal(size=(1, 2, 3, 5, 2)),
                  jnp.float32)
  got = inference.full_res_logits(_ramp_apply, {}, x, (3, 5), flip=True,
                                  output=0)
  np.testing.assert_allclose(got, x[0] + 2.0, rtol=0, atol=1e-6)
  no_flip = inference.full_res_logits(_ramp_apply, {}, x, (3, 5), output=0)
  np.testing.assert_allclose(no_flip, x[0] + jnp.arange(5.0)[:, None],
                             rtol=0, atol=1e-6)


def test_multi_scale_averages_every_pass_with_equal_weight():
  x = jnp.full((2, 1, 10, 12, 3), 2.0, jnp.float32)
  got = inference.full_res_logits(_size_apply, {}, x, (10, 12),
                                  scales=(0.5, 1.0, 1.5))
  # Passes at 5x6, 10x12 and 15x18: mean height 10, mean width 12.
  assert got.shape == (1, 10, 12, 3)
  np.testing.assert_allclose(got[..., 0], 10.0, rtol=1e-6)
  np.testing.assert_allclose(got[..., 1], 12.0, rtol=1e-6)
  np.testing.assert_allclose(got[..., 2], 2.0, rtol=1e-6)


def test_multi_scale_with_flip_counts_each_pass_once():
  # Per scale (constant input c = 1): c + (w_s - 1) / 2 with w_s = 6, 12,
  # i.e. 3.5 and 6.5; their mean is 5.
  x = jnp.ones((1, 1, 8, 12, 2), jnp.float32)
  got = inference.full_res_logits(_ramp_apply, {}, x, (8, 12),
                                  scales=(0.5, 1.0), flip=True)
  np.testing.assert_allclose(got, 5.0, rtol=1e-6)


def test_output_selects_modalities_by_index_and_name():
  x = jnp.zeros((2, 1, 4, 4, 1), jnp.float32)
  apply_fn = lambda v, x: _outputs(x + jnp.arange(1.0, 3.0)[:, None, None,
                                                            None, None])
  run = functools.partial(inference.full_res_logits, apply_fn, {}, x, (4, 4),
                          modality_names=('rgb', 'depth'))
  np.testing.assert_array_equal(run(output='ensemble'), 1.5)
  np.testing.assert_array_equal(run(output=1), 2.0)
  np.testing.assert_array_equal(run(output='depth'), 2.0)
  np.testing.assert_array_equal(run(output='all')[:, 0, 0, 0, 0],
                                [1.0, 2.0, 1.5])
  with pytest.raises(ValueError, match="'hha'.*'ensemble', 'all', 'rgb'"):
    run(output='hha')
  with pytest.raises(ValueError, match='Unknown output 2'):
    run(output=2)


def test_pad_to_multiple_pads_bottom_right_and_crop_undoes_it():
  x = np.arange(1, 16, dtype=np.float32).reshape(1, 3, 5, 1)
  padded, size = inference.pad_to_multiple(x, 4)
  assert size == (3, 5) and padded.shape == (1, 4, 8, 1)
  assert isinstance(padded, np.ndarray)
  np.testing.assert_array_equal(padded[0, :3, :5], x[0])
  assert padded[0, 3].sum() == 0 and padded[0, :, 5:].sum() == 0
  np.testing.assert_array_equal(inference.crop_to_size(padded, size), x)
  same, size = inference.pad_to_multiple(jnp.ones((2, 8, 4, 3)), 4)
  assert isinstance(same, jax.Array) and same.shape == (2, 8, 4, 3)


def test_padded_prediction_keeps_the_geometry_of_the_unpadded_one():
  x = np.random.default_rng(4).normal(size=(1, 1, 40, 44, 3))
  v = {'scale': jnp.float32(1.0)}
  padded = inference.make_predict_fn(_subsample_apply, v)(x)
  plain = inference.make_predict_fn(_subsample_apply, v, pad_multiple=None)(x)
  assert padded.shape == plain.shape == (1, 40, 44, 3)
  np.testing.assert_allclose(
      plain, inference.full_res_logits(_subsample_apply, v,
                                       jnp.asarray(x, jnp.float32), (40, 44)),
      rtol=0, atol=1e-6)
  # Both grids are exactly 4x: the cubic taps of rows <= 33 and columns
  # <= 37 never reach the padding, so those pixels agree.
  np.testing.assert_allclose(padded[:, :34, :38], plain[:, :34, :38],
                             rtol=0, atol=1e-6)
  assert not np.allclose(padded[:, 36:], plain[:, 36:], atol=1e-3)


def test_padding_to_a_multiple_already_met_changes_nothing():
  x = np.random.default_rng(5).normal(size=(2, 1, 32, 64, 3))
  v = {'scale': jnp.float32(2.0)}
  want = inference.make_predict_fn(_subsample_apply, v, pad_multiple=None,
                                   output='all')(x)
  got = inference.make_predict_fn(_subsample_apply, v, output='all')(x)
  assert got.shape == (3, 1, 32, 64, 3)
  np.testing.assert_array_equal(got, want)
