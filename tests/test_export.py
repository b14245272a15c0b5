"""StableHLO export and parameters-only checkpoints, on the tiny model."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cen_jax.tasks.segmentation import export
from cen_jax.core import resize
from tests import tiny

H, W = 20, 28


def _inputs(batch, seed):
  rng = np.random.default_rng(seed)
  return rng.normal(size=(2, batch, H, W, 3)).astype(np.float32)


@functools.partial(jax.jit, static_argnums=0)
def _reference(model, variables, x):
  """``model.apply`` and the official bicubic resize, modalities first."""
  out = model.apply(variables, x, train=False)
  logits = jnp.concatenate([out['modality_logits'],
                            out['ensemble_logits'][None]], axis=0)
  return resize.resize_bicubic_cv2(logits, (H, W))


def test_baked_export_round_trips_through_a_file_with_any_batch(tmp_path):
  model, variables = tiny.model_and_variables()
  exported = export.export_inference(model, variables, num_modalities=2,
                                     height=H, width=W)
  assert exported.platforms == ('cpu', 'cuda', 'tpu')
  assert str(exported.in_avals[0].shape) == f'(2, b, {H}, {W}, 3)'
  path = tmp_path / 'sub' / 'cen.stablehlo'
  export.save_export(path, exported)
  # The weights are inside: at least 4 bytes per variable.
  num_values = sum(a.size for a in jax.tree.leaves(variables))
  assert path.stat().st_size > 4 * num_values
  loaded = export.load_export(path)
  # Eval-mode BN treats examples independently: one reference serves both.
  x = _inputs(3, seed=1)
  want = _reference(model, variables, x)
  for batch in (1, 3):
    got = loaded.call(x[:, :batch])
    assert got.shape == (3, batch, H, W, 5)
    np.testing.assert_allclose(got, want[:, :batch], rtol=1e-5, atol=1e-5)


def test_export_with_variables_as_argument_and_static_batch(tmp_path):
  model, variables = tiny.model_and_variables()
  exported = export.export_inference(
      model, variables, num_modalities=2, height=H, width=W, batch=3,
      output='ensemble', bake_variables=False, platforms=('cpu',))
  path = tmp_path / 'cen.stablehlo'
  export.save_export(path, exported)
  assert path.stat().st_size < 4 * sum(
      a.size for a in jax.tree.leaves(variables))
  x = _inputs(3, seed=1)
  got = export.load_export(path).call(variables, x)
  assert got.shape == (3, H, W, 5)
  np.testing.assert_allclose(got, _reference(model, variables, x)[2],
                             rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match='shape'):
    export.load_export(path).call(variables, x[:, :2])
