"""FID and KID of translated images, computed as the official CEN code does.

The official evaluation (``image2image_translation/main.py: evaluate`` and
``utils/fid_kid.py``, adapted from TTUR and MMD-GAN) saves every generated
and real test image as a PNG after min-max normalising *each image* over all
its pixels and channels to [0, 255] (truncated to uint8), reads the PNGs back
/ 255, and runs pytorch-fid's Inception on them (299 x 299 bilinear resize,
[0, 1] -> [-1, 1], 2048-d pool3 features). Then:

* FID: pytorch-fid's ``calculate_frechet_distance`` on the mean and
  ``np.cov(rowvar=False)`` of the features of the fake and real sets;
* KID: the unbiased MMD^2 with the polynomial kernel
  ``k(x, y) = (<x, y> / d + 1) ** 3``, averaged over 50 subsets of
  ``min(1000, n_fake, n_real)`` examples drawn without replacement from each
  set (fake first, then real), and reported x 100.

Here the images never leave the device: ``features_of_outputs`` min-max
normalises and quantises the [-1, 1] generator outputs like the PNG writer,
then computes the features under ``jit``; the statistics are host-side
float64 NumPy/SciPy. What is not reproduced: the official PNGs are written by
matplotlib (``imshow`` into a 5 x 5 inch figure saved at 100 dpi, i.e. the
image redrawn at 500 x 500 with matplotlib's interpolation, as RGBA), and
those 500 x 500 images are what the Inception resizes to 299. Here the
outputs go to the Inception at their own size, so values are close to, not
bit-identical with, the official log.
"""

import functools
from typing import Any
import warnings

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
from scipy import linalg

from cen_jax.tasks.translation import inception as inception_lib


def minmax_per_image(images: jnp.ndarray, *,
                     quantize: bool = False) -> jnp.ndarray:
  """Maps each image to [0, 1] by its own minimum and maximum.

  As the official ``plot_test_result_single``: ``(x - min) / (max - min)``
  with min and max over the whole image (all pixels and channels). A
  constant image (where the official divides by zero) becomes zeros.

  Args:
    images: ``(N, H, W, C)``, any range.
    quantize: also round down to the 256 levels of the official uint8 PNG,
      ``floor(255 * y) / 255``.

  Returns:
    ``(N, H, W, C)`` float32 in [0, 1].
  """
  x = images.astype(jnp.float32)
  lo = jnp.min(x, axis=(1, 2, 3), keepdims=True)
  hi = jnp.max(x, axis=(1, 2, 3), keepdims=True)
  span = hi - lo
  scale = 255.0 if quantize else 1.0
  y = jnp.where(span > 0, (x - lo) * scale / jnp.where(span > 0, span, 1),
                0.0)
  return jnp.floor(y) / 255.0 if quantize else y


@functools.partial(jax.jit, static_argnums=0)
def inception_features(model: inception_lib.InceptionV3, variables: Any,
                       images: jnp.ndarray) -> jnp.ndarray:
  """Pool3 features of images in [0, 1], as pytorch-fid reads PNGs.

  A pure function of ``(variables, images)``: a batch sharded over a mesh
  gives features sharded the same way.

  Args:
    model: the FID Inception (static).
    variables: its ``{'params', 'batch_stats'}``.
    images: ``(N, H, W, 3)`` in [0, 1].

  Returns:
    ``(N, 2048)`` float32.
  """
  return model.apply(variables, images)


@functools.partial(jax.jit, static_argnums=0)
def features_of_outputs(model: inception_lib.InceptionV3, variables: Any,
                        images: jnp.ndarray) -> jnp.ndarray:
  """Pool3 features of generator outputs or targets, as the official saw them.

  Args:
    model: the FID Inception (static).
    variables: its ``{'params', 'batch_stats'}``.
    images: ``(N, H, W, 3)``, the tanh outputs (or normalised targets) in
      [-1, 1]; any range works, as each image is min-max normalised and
      quantised to uint8 levels first (``minmax_per_image``).

  Returns:
    ``(N, 2048)`` float32.
  """
  return inception_features(model, variables,
                            minmax_per_image(images, quantize=True))


def load_inception(path: str) -> tuple[inception_lib.InceptionV3, Any]:
  """``(model, variables)`` from pytorch-fid's weights file at ``path``.

  The variables are device arrays (21.8M float32). Hand them to a jitted step
  as an argument: arrays a jitted function closes over (e.g. through
  ``functools.partial``) are embedded in its program as constants.

  Raises:
    FileNotFoundError: no file; the message says where to get it.
  """
  variables = inception_lib.load_torch_weights(path)
  return inception_lib.InceptionV3(), jax.tree.map(jnp.asarray, variables)


def feature_sums(features: Any) -> tuple[int, np.ndarray, np.ndarray]:
  """``(count, sum, sum of outer products)`` of ``(N, D)`` features.

  Add these up over batches (in float64, as returned) and pass the totals to
  ``statistics_from_sums``: FID then needs no copy of all the features.
  """
  f = np.asarray(features, np.float64)
  return f.shape[0], f.sum(axis=0), f.T @ f


def statistics_from_sums(count: int, total: np.ndarray,
                         total_outer: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray]:
  """Mean and unbiased covariance from streamed sums.

  Args:
    count: N, at least 2.
    total: ``(D,)`` sum of the features.
    total_outer: ``(D, D)`` sum of ``f f^T``.

  Returns:
    ``mu`` ``(D,)`` and ``sigma`` ``(D, D)``, as ``np.mean(axis=0)`` and
    ``np.cov(rowvar=False)`` of the features (up to float64 rounding).
  """
  if count < 2:
    raise ValueError(f'a covariance needs at least 2 examples, got {count}')
  mu = np.asarray(total, np.float64) / count
  sigma = (np.asarray(total_outer, np.float64)
           - count * np.outer(mu, mu)) / (count - 1)
  return mu, sigma


def _sqrtm(a: np.ndarray) -> np.ndarray:
  # Singular products are expected (fewer examples than features); the
  # caller checks the result as pytorch-fid does, so SciPy's warning is noise.
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', linalg.LinAlgWarning)
    return linalg.sqrtm(a)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                     sigma2: np.ndarray, eps: float = 1e-6) -> float:
  """pytorch-fid's ``calculate_frechet_distance``, in float64.

  ``|mu1 - mu2|^2 + Tr(sigma1 + sigma2 - 2 sqrtm(sigma1 sigma2))``. If the
  square root of the product is not finite, ``eps`` is added to both
  diagonals and it is taken again; a complex result whose diagonal has an
  imaginary part above 1e-3 is an error, a smaller one is dropped.

  Args:
    mu1, mu2: ``(D,)`` means.
    sigma1, sigma2: ``(D, D)`` covariances.
    eps: the diagonal offset for a singular product.

  Returns:
    The distance.

  Raises:
    ValueError: mismatched shapes, or a significant imaginary component.
  """
  mu1, mu2 = (np.atleast_1d(np.asarray(m, np.float64)) for m in (mu1, mu2))
  sigma1, sigma2 = (np.atleast_2d(np.asarray(s, np.float64))
                    for s in (sigma1, sigma2))
  if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
    raise ValueError(f'mismatched statistics: means {mu1.shape} and '
                     f'{mu2.shape}, covariances {sigma1.shape} and '
                     f'{sigma2.shape}')
  diff = mu1 - mu2
  covmean = _sqrtm(sigma1.dot(sigma2))
  if not np.isfinite(covmean).all():
    logging.warning('FID: singular covariance product; adding %g to the '
                    'diagonals', eps)
    offset = np.eye(sigma1.shape[0]) * eps
    covmean = _sqrtm((sigma1 + offset).dot(sigma2 + offset))
  if np.iscomplexobj(covmean):
    if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
      raise ValueError('FID: imaginary component '
                       f'{np.max(np.abs(covmean.imag))}')
    covmean = covmean.real
  return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2)
               - 2 * np.trace(covmean))


def fid_from_features(fake: Any, real: Any) -> float:
  """FID of two ``(N, D)`` feature sets (mean and ``np.cov``, float64)."""
  stats = []
  for f in (fake, real):
    f = np.asarray(f, np.float64)
    stats += [np.mean(f, axis=0), np.cov(f, rowvar=False)]
  return frechet_distance(*stats)


def polynomial_kernel(x: np.ndarray, y: np.ndarray, *, degree: int = 3,
                      gamma: float | None = None,
                      coef0: float = 1.0) -> np.ndarray:
  """``(gamma <x_i, y_j> + coef0) ** degree``, ``(n, m)``; gamma 1/D default.

  The kernel of scikit-learn's ``polynomial_kernel`` that the official uses.
  """
  gamma = 1.0 / x.shape[1] if gamma is None else gamma
  return (gamma * (x @ y.T) + coef0) ** degree


def mmd2_unbiased(x: np.ndarray, y: np.ndarray, **kernel: Any) -> float:
  """Unbiased MMD^2 of two equal-size samples ``(m, D)``, as MMD-GAN.

  ``(sum_{i != j} k(x_i, x_j) + sum_{i != j} k(y_i, y_j)) / (m (m - 1))
  - 2 sum_{i, j} k(x_i, y_j) / m^2``: the cross term keeps its diagonal
  (MMD-GAN's ``'unbiased'`` estimator, not the U-statistic).
  """
  m = x.shape[0]
  if y.shape[0] != m or m < 2:
    raise ValueError(f'need two samples of equal size >= 2, got {m} and '
                     f'{y.shape[0]}')
  k_xx = polynomial_kernel(x, x, **kernel)
  k_yy = polynomial_kernel(y, y, **kernel)
  k_xy = polynomial_kernel(x, y, **kernel)
  within = (k_xx.sum() - np.trace(k_xx)) + (k_yy.sum() - np.trace(k_yy))
  return float(within / (m * (m - 1)) - 2 * k_xy.sum() / (m * m))


def kid(fake: Any, real: Any, *, rng: np.random.Generator,
        num_subsets: int = 50, subset_size: int = 1000, degree: int = 3,
        gamma: float | None = None, coef0: float = 1.0) -> float:
  """KID x 100, as the official ``polynomial_mmd_averages(...).mean() * 100``.

  Each of ``num_subsets`` rounds draws ``min(subset_size, n_fake, n_real)``
  rows of ``fake`` and then of ``real`` without replacement, with
  ``rng.choice(n, size, replace=False)``, and takes ``mmd2_unbiased``; the
  result is the mean times 100.

  The official draws with ``np.random.choice``, the unseeded global
  ``RandomState``, so its KID is not reproducible run to run. Passing a
  ``np.random.RandomState(seed)`` here gives exactly the draws the official
  makes after ``np.random.seed(seed)``; a ``np.random.Generator`` draws other
  (equally distributed) subsets. When both sets have the same number of
  rows, at most ``subset_size``, every subset is a whole set in some order;
  the estimator does not depend on the order, so the KID is the official one
  whatever the RNG.

  Args:
    fake: ``(N_f, D)`` features of the generated images.
    real: ``(N_r, D)`` features of the real images.
    rng: the source of the subsets (a seeded Generator or RandomState).
    num_subsets: 50 officially.
    subset_size: 1000 officially; capped at both set sizes.
    degree: kernel degree, 3 officially.
    gamma: kernel scale; None (official) is 1/D.
    coef0: kernel offset, 1 officially.

  Returns:
    The mean unbiased MMD^2 over subsets, x 100.
  """
  fake = np.asarray(fake, np.float64)
  real = np.asarray(real, np.float64)
  size = min(subset_size, len(fake), len(real))
  kernel = dict(degree=degree, gamma=gamma, coef0=coef0)
  values = np.zeros(num_subsets)
  for i in range(num_subsets):
    f = fake[rng.choice(len(fake), size, replace=False)]
    r = real[rng.choice(len(real), size, replace=False)]
    values[i] = mmd2_unbiased(f, r, **kernel)
  return float(values.mean() * 100)
