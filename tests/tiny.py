"""The tiny CEN with random variables, shared by the inference-side tests."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from cen_jax.core import programs
from cen_jax.tasks.segmentation import models

TINY = dict(depth='tiny', num_classes=5, exchange='bn_threshold', width=8,
            decoder_features=(16, 8))


def random_variables(model, num_modalities=2, seed=0, bias_std=None):
  """Random variables for ``model`` (shapes only: no slow init).

  Fan-in scaled weights keep the activations O(1) through the network.
  ``bias_std`` (default: the same fan-in rule, i.e. std 1) sets the biases'
  spread instead; a small one keeps a classifier bias from deciding the
  class on its own. Running variances are drawn from U(0.5, 1.5).
  """
  x = jax.ShapeDtypeStruct((num_modalities, 1, 32, 32, 3), jnp.float32)
  shapes = jax.eval_shape(lambda rng: programs.init(model, rng, x, train=False),
                          jax.random.key(0))
  rng = np.random.default_rng(seed)

  def draw(path, s):
    std = np.prod(s.shape[:-1]) ** -0.5
    if bias_std is not None and path[-1].key == 'bias':
      std = bias_std
    return rng.normal(0.0, std, s.shape).astype(np.float32)

  variables = jax.tree_util.tree_map_with_path(draw, shapes)
  variables['batch_stats'] = jax.tree.map(
      lambda s: rng.uniform(0.5, 1.5, s.shape).astype(np.float32),
      shapes['batch_stats'])
  return variables


@functools.lru_cache(maxsize=None)
def model_and_variables(num_modalities=2, seed=0):
  """``(models.build(TINY), random_variables(...))``, cached per argument."""
  model = models.build(TINY)
  return model, random_variables(model, num_modalities, seed)
