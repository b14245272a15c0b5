"""FID Inception, FID and KID against pytorch-fid and worked answers."""

import functools
import sys

import flax
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import pytest

from cen_jax.core.torch_io import ConversionError
from cen_jax.tasks.translation import fid
from cen_jax.tasks.translation import inception

_TORCH_NAMES = {'scale': 'weight', 'bias': 'bias', 'mean': 'running_mean',
                'var': 'running_var'}
_KEEP_ALIVE = []


def _import_torchvision():
  """``import torchvision``, also beside a CPU-only torch.

  PyPI's torchvision is built against CUDA torch; beside the CPU wheel its C
  ops do not load, and torchvision 0.28 then fails to import because it
  registers fake kernels for ``nms``/``qnms`` unconditionally
  (pytorch/vision#9085). pytorch-fid needs only its Python modules, so
  defining those two schemas lets the import through.
  """
  # torch and torchvision are test requirements (requirements-torch.txt):
  # missing, the reference cannot be built and the test must fail.
  import torch  # pylint: disable=g-import-not-at-top
  try:
    import torchvision  # pylint: disable=g-import-not-at-top
  except RuntimeError as e:
    if 'torchvision::' not in str(e):
      raise
    for name in [n for n in sys.modules if n.startswith('torchvision')]:
      del sys.modules[name]
    lib = torch.library.Library('torchvision', 'DEF')
    for op in ('nms', 'qnms'):
      lib.define(f'{op}(Tensor dets, Tensor scores, float iou_threshold) '
                 '-> Tensor')
    _KEEP_ALIVE.append(lib)  # the schemas live as long as the library
    import torchvision  # pylint: disable=g-import-not-at-top
  return torchvision


def _pytorch_fid():
  pytest.importorskip('pytorch_fid', reason='requirements-torch.txt')
  _import_torchvision()
  # pylint: disable=g-import-not-at-top
  from pytorch_fid import fid_score
  from pytorch_fid import inception as pf_inception
  # pylint: enable=g-import-not-at-top
  return pf_inception, fid_score


@functools.lru_cache(maxsize=1)
def _state_dict(seed: int = 0) -> dict:
  """pytorch-fid's key set with seeded weights that keep activations O(1)."""
  import torch  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  shapes = flax.traverse_util.flatten_dict(inception.variable_shapes())
  sd = {}
  for (_, *module, leaf), s in sorted(shapes.items()):
    prefix = '.'.join(module)
    if leaf == 'kernel':
      kh, kw, cin, cout = s.shape
      value = rng.normal(0, np.sqrt(1 / (kh * kw * cin)), (cout, cin, kh, kw))
    elif leaf in ('scale', 'var'):
      value = rng.uniform(0.5, 1.5, s.shape)
    else:
      value = rng.uniform(-0.2, 0.2, s.shape)
    name = 'weight' if leaf == 'kernel' else _TORCH_NAMES[leaf]
    sd[f'{prefix}.{name}'] = torch.from_numpy(value.astype(np.float32))
    if leaf == 'var':
      sd[f'{prefix}.num_batches_tracked'] = torch.tensor(0)
  sd['fc.weight'] = torch.from_numpy(
      rng.normal(0, 0.01, (1008, 2048)).astype(np.float32))
  sd['fc.bias'] = torch.zeros(1008)
  return sd


def _torch_inception(monkeypatch):
  """pytorch-fid's own ``InceptionV3([3])`` with ``_state_dict`` loaded."""
  pf_inception, _ = _pytorch_fid()

  def no_download(url, **kwargs):
    assert url == inception.WEIGHTS_URL
    return _state_dict()

  monkeypatch.setattr(pf_inception, 'load_state_dict_from_url', no_download)
  return pf_inception.InceptionV3([3]).eval()  # strict load_state_dict


def _minmax_uint8(images):
  """The official PNG writer in NumPy: per-image min-max, uint8, / 255."""
  lo = images.min(axis=(1, 2, 3), keepdims=True)
  hi = images.max(axis=(1, 2, 3), keepdims=True)
  return ((images - lo) * 255 / (hi - lo)).astype(np.uint8) / 255


def test_features_match_pytorch_fid(monkeypatch):
  # Generator outputs in [-1, 1], sharded over the batch, against pytorch-fid
  # on the PNG-like images the official writes from them.
  import torch  # pylint: disable=g-import-not-at-top
  model = _torch_inception(monkeypatch)
  y = np.random.default_rng(1).uniform(-1, 1, (2, 64, 64, 3))
  y = y.astype(np.float32)
  x = _minmax_uint8(y).astype(np.float32)
  with torch.no_grad():
    want = model(torch.from_numpy(x.transpose(0, 3, 1, 2)))[0]
  want = want.numpy().reshape(len(x), -1)
  variables = jax.tree.map(
      jnp.asarray, inception.from_torch_state_dict(_state_dict()))
  mesh = jax.make_mesh((2,), ('data',), devices=jax.devices()[:2],
                       axis_types=(jax.sharding.AxisType.Auto,))
  batch = jax.device_put(y, NamedSharding(mesh, P('data')))
  got = fid.features_of_outputs(inception.InceptionV3(), variables, batch)
  assert got.shape == (2, inception.FEATURES)
  assert got.sharding.spec == P('data')
  assert np.std(want) > 0.1  # activations neither vanished nor saturated
  err = np.max(np.abs(np.asarray(got) - want)) / np.max(np.abs(want))
  print(f'relative error vs pytorch-fid: {err:.2e}')
  assert err <= 1e-5, err


def test_weights_file_round_trip(tmp_path):
  torch = pytest.importorskip('torch', reason='requirements-torch.txt')
  sd = _state_dict()
  path = tmp_path / inception.WEIGHTS_FILE
  torch.save(sd, path)
  variables = inception.load_torch_weights(str(path))
  assert set(variables) == {'params', 'batch_stats'}
  np.testing.assert_array_equal(
      variables['params']['Mixed_6b']['branch7x7_2']['conv']['kernel'],
      sd['Mixed_6b.branch7x7_2.conv.weight'].numpy().transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(
      variables['batch_stats']['Mixed_7c']['branch_pool']['bn']['var'],
      sd['Mixed_7c.branch_pool.bn.running_var'].numpy())
  want = jax.tree.map(lambda s: s.shape, inception.variable_shapes())
  assert jax.tree.map(np.shape, variables) == want


def test_mismatched_weights_file_names_file_and_keys(tmp_path):
  torch = pytest.importorskip('torch', reason='requirements-torch.txt')
  sd = dict(_state_dict())
  del sd['Mixed_5b.branch1x1.bn.running_mean']
  sd['Conv2d_1a_3x3.conv.weight'] = torch.zeros(32, 3, 5, 5)
  path = tmp_path / 'other.pth'
  torch.save(sd, path)
  with pytest.raises(ConversionError) as e:
    inception.load_torch_weights(str(path))
  message = str(e.value)
  assert str(path) in message
  assert 'Mixed_5b/branch1x1/bn/mean' in message
  assert 'Conv2d_1a_3x3.conv.weight has shape (5, 5, 3, 32)' in message


def test_missing_weights_file_says_where_to_get_it(tmp_path):
  path = tmp_path / 'nowhere' / inception.WEIGHTS_FILE
  with pytest.raises(FileNotFoundError) as e:
    fid.load_inception(str(path))
  message = str(e.value)
  assert str(path) in message
  assert ('https://github.com/mseitzer/pytorch-fid/releases/download/'
          'fid_weights/pt_inception-2015-12-05-6726825d.pth') in message
  assert 'config.eval.inception_weights' in message


def test_minmax_per_image_by_hand():
  images = np.zeros((3, 1, 2, 3), np.float32)
  images[0, 0, 0] = [-1, 0, 1]
  images[0, 0, 1] = [0.5, -0.5, 0]
  images[1] = 7.0  # constant: zeros, where the official divides by zero
  images[2, 0, 0] = [0, 0, 0]
  images[2, 0, 1] = [0, 0, 0.3]
  got = np.asarray(fid.minmax_per_image(jnp.asarray(images)))
  np.testing.assert_allclose(got[0, 0, 0], [0, 0.5, 1])
  np.testing.assert_allclose(got[0, 0, 1], [0.75, 0.25, 0.5])
  np.testing.assert_array_equal(got[1], 0)
  np.testing.assert_allclose(got[2, 0, 1], [0, 0, 1])
  # The uint8 PNG truncates: 0.75 * 255 = 191.25 -> 191.
  q = np.asarray(fid.minmax_per_image(jnp.asarray(images), quantize=True))
  np.testing.assert_allclose(q[0, 0, 1] * 255, [191, 63, 127], atol=1e-4)


def _features(n, d, seed):
  rng = np.random.default_rng(seed)
  mix = rng.normal(size=(d, d)) / np.sqrt(d)
  return np.abs(rng.normal(size=(n, d)) @ mix + rng.normal(size=d))


@pytest.mark.parametrize('n, d', [(200, 16), (10, 32)])
def test_fid_equals_pytorch_fid(n, d):
  _, fid_score = _pytorch_fid()
  a, b = _features(n, d, 0), _features(n, d, 1) * 1.3
  stats = [np.mean(a, 0), np.cov(a, rowvar=False),
           np.mean(b, 0), np.cov(b, rowvar=False)]
  want = fid_score.calculate_frechet_distance(*stats)
  np.testing.assert_allclose(fid.frechet_distance(*stats), want, rtol=1e-6)
  np.testing.assert_allclose(fid.fid_from_features(a, b), want, rtol=1e-6)


@pytest.mark.filterwarnings('ignore::scipy.linalg.LinAlgWarning',
                            'ignore::RuntimeWarning')  # pytorch-fid's sqrtm
def test_fid_eps_path_equals_pytorch_fid():
  # SciPy's sqrtm of a singular covariance product is finite; a product
  # with a Jordan block at 0 is not, which takes the eps branch.
  _, fid_score = _pytorch_fid()
  mu1, mu2 = np.array([0.0, 1.0]), np.array([0.5, -1.0])
  sigma1, sigma2 = np.array([[0.0, 1.0], [0.0, 0.0]]), np.eye(2)
  assert not np.isfinite(fid._sqrtm(sigma1 @ sigma2)).all()
  want = fid_score.calculate_frechet_distance(mu1, sigma1, mu2, sigma2)
  got = fid.frechet_distance(mu1, sigma1, mu2, sigma2)
  assert np.isfinite(got)
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_fid_rejects_a_large_imaginary_component():
  # A negative eigenvalue puts i on the square root's diagonal.
  with pytest.raises(ValueError, match='imaginary component'):
    fid.frechet_distance(np.zeros(2), np.diag([-1.0, 1.0]), np.zeros(2),
                         np.eye(2))


def test_statistics_from_streamed_sums():
  features = _features(50, 8, 2).astype(np.float32)
  sums = [fid.feature_sums(chunk) for chunk in np.split(features, [7, 30])]
  count = sum(s[0] for s in sums)
  mu, sigma = fid.statistics_from_sums(
      count, sum(s[1] for s in sums), sum(s[2] for s in sums))
  assert count == 50
  np.testing.assert_allclose(mu, np.mean(features.astype(np.float64), 0),
                             rtol=1e-12)
  np.testing.assert_allclose(sigma, np.cov(features, rowvar=False),
                             rtol=1e-9, atol=1e-12)


def _kid_reference(fake, real, num_subsets, subset_size, choice):
  """KID x 100 with loops: k(x, y) = (x.y / d + 1)^3, unbiased MMD^2."""
  d = fake.shape[1]

  def k(x, y):
    return (sum(x[t] * y[t] for t in range(d)) / d + 1) ** 3

  values = []
  for _ in range(num_subsets):
    m = min(subset_size, len(fake), len(real))
    x = fake[choice(len(fake), m, replace=False)]
    y = real[choice(len(real), m, replace=False)]
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
    values.append((xx + yy) / (m * (m - 1)) - 2 * xy / (m * m))
  return 100 * np.mean(values)


def test_kid_equals_a_loop_reference():
  fake, real = _features(15, 5, 3), _features(12, 5, 4) + 0.2
  want = _kid_reference(fake, real, 4, 8,
                        np.random.default_rng(7).choice)
  got = fid.kid(fake, real, rng=np.random.default_rng(7), num_subsets=4,
                subset_size=8)
  np.testing.assert_allclose(got, want, rtol=1e-10)


def test_kid_with_random_state_draws_as_the_official():
  # The official draws with np.random.choice after (at best) np.random.seed.
  fake, real = _features(15, 5, 3), _features(12, 5, 4)
  state = np.random.get_state()
  try:
    np.random.seed(11)
    want = _kid_reference(fake, real, 3, 6, np.random.choice)
  finally:
    np.random.set_state(state)
  got = fid.kid(fake, real, rng=np.random.RandomState(11), num_subsets=3,
                subset_size=6)
  np.testing.assert_allclose(got, want, rtol=1e-10)


def test_kid_of_equal_small_sets_does_not_depend_on_the_rng():
  fake, real = _features(9, 4, 5), _features(9, 4, 6)
  values = [fid.kid(fake, real, rng=np.random.default_rng(s)) for s in (0, 1)]
  np.testing.assert_allclose(values[0], values[1], rtol=1e-12)


def test_kid_by_hand():
  # d = 1, so k(x, y) = (x y + 1)^3; fake {0, 1}, real {1, 2}.
  # Within fake: k(0, 1) = 1, twice; within real: k(1, 2) = 27, twice;
  # across: k(0, 1) + k(0, 2) + k(1, 1) + k(1, 2) = 1 + 1 + 8 + 27 = 37.
  # MMD^2 = (2 + 54) / 2 - 2 * 37 / 4 = 9.5, reported x 100.
  got = fid.kid(np.array([[0.0], [1.0]]), np.array([[1.0], [2.0]]),
                rng=np.random.default_rng(0), num_subsets=3)
  assert got == pytest.approx(950.0, rel=1e-12)
