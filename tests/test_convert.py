"""Import of official and torchvision weights."""

import functools
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cen_jax.tasks.segmentation import convert
from cen_jax.tasks.segmentation import models
from tests import parity_utils as pu

TINY = dict(depth='tiny', num_classes=5, exchange='bn_threshold', width=8,
            decoder_features=(16, 8))


def _template(model_cfg, num_modalities=2):
  model = models.build(model_cfg)
  x = jnp.zeros((num_modalities, 1, 32, 32, 3))
  return jax.eval_shape(functools.partial(model.init, train=False),
                        jax.random.key(0), x)


@functools.lru_cache(maxsize=None)
def _tiny_init(num_modalities, seed):
  model = models.build(TINY)
  x = jnp.zeros((num_modalities, 1, 32, 32, 3))
  return jax.jit(functools.partial(model.init, train=False))(
      jax.random.key(seed), x)


def _tiny_variables(num_modalities=2, seed=0):
  v = _tiny_init(num_modalities, seed)
  # Distinct BN statistics per modality, so a mix-up would show.
  v = jax.tree.map(np.asarray, v)
  rng = np.random.default_rng(seed)
  v['batch_stats'] = jax.tree.map(
      lambda a: rng.uniform(0.5, 1.5, a.shape).astype(np.float32),
      v['batch_stats'])
  return v


@pytest.mark.parametrize('depth', [50, 101, 152])
def test_every_official_key_maps_onto_the_model(depth):
  template = _template(dict(depth=depth, num_classes=40,
                            exchange='bn_threshold'))
  flat = jax.tree_util.tree_flatten_with_path(template)[0]
  want = {tuple(k.key for k in path): leaf.shape for path, leaf in flat}
  covered = set()
  for key, shape in pu.key_shapes(depth).items():
    target = convert.map_key('module.' + key)
    if target is None:
      assert key.endswith('num_batches_tracked')
      continue
    collection, path, modality = target
    full = (collection,) + path
    expected = want[full]
    if modality is not None:
      assert expected == (2,) + shape, key
    elif len(shape) == 4:
      o, i, kh, kw = shape
      assert expected == (kh, kw, i, o), key
    else:
      assert expected == shape, key
    covered.add(full)
  assert covered == set(want)


def test_round_trip_is_exact_and_prefix_is_optional():
  v = _tiny_variables()
  sd = convert.to_torch_state_dict(v)
  assert 'encoder' not in ''.join(sd)
  assert 'layer1.0.downsample.1.bn_1.running_var' in sd
  assert 'decoder' not in ''.join(sd)
  assert 'adapt_stage1_b.0.1_conv.module.bias' in sd
  for prefixed in (sd, {'module.' + k: a for k, a in sd.items()}):
    back = convert.from_torch_state_dict(prefixed, 2, template=v)
    jax.tree.map(np.testing.assert_array_equal, back,
                 {'params': v['params'], 'batch_stats': v['batch_stats']})


def test_errors_list_missing_unexpected_and_misshaped_keys():
  v = _tiny_variables()
  sd = convert.to_torch_state_dict(v)
  del sd['layer2.0.conv2.module.weight']
  del sd['bn1.bn_1.weight']
  sd['clf_conv.module.bias'] = np.zeros((7,), np.float32)
  sd['layer9.0.bn2.bn_0.weight'] = np.zeros((3,), np.float32)
  sd['layer9.0.bn2.bn_1.weight'] = np.zeros((3,), np.float32)
  sd['bn1.bn_2.weight'] = np.zeros((8,), np.float32)
  sd['some_head.fc.weight'] = np.zeros((3,), np.float32)
  with pytest.raises(convert.ConversionError) as err:
    convert.from_torch_state_dict(sd, 2, template=v)
  msg = str(err.value)
  assert 'missing: params/encoder/layer2_0/conv2/kernel' in msg
  assert 'missing BN modality: encoder/bn1/scale of bn_1' in msg
  assert ('mis-shaped: params/decoder/clf_conv/bias has (7,), model wants '
          '(5,)') in msg
  assert 'unexpected: params/encoder/layer9_0/bn2/scale' in msg
  assert 'unexpected key: bn1.bn_2.weight' in msg
  assert 'unexpected key: some_head.fc.weight' in msg


def test_torchvision_init_copies_imagenet_bn_to_every_modality():
  v = _tiny_variables(num_modalities=3)
  official = convert.to_torch_state_dict(_tiny_variables(seed=1))
  tv = {}  # torchvision layout: no .module., no .bn_m.
  for k, a in official.items():
    if k.startswith(('conv1', 'bn1', 'layer')) and '.bn_1.' not in k:
      tv[k.replace('.module.', '.').replace('.bn_0.', '.')] = a
  tv['fc.weight'] = np.zeros((1000, 32), np.float32)
  out = convert.from_torchvision_resnet(tv, v)
  enc = out['params']['encoder']
  np.testing.assert_array_equal(
      enc['layer1_0']['conv2']['kernel'],
      official['layer1.0.conv2.module.weight'].transpose(2, 3, 1, 0))
  for m in range(3):
    np.testing.assert_array_equal(
        out['batch_stats']['encoder']['layer2_0']['downsample_bn']['var'][m],
        official['layer2.0.downsample.1.bn_0.running_var'])
    np.testing.assert_array_equal(enc['bn1']['scale'][m],
                                  official['bn1.bn_0.weight'])
  jax.tree.map(np.testing.assert_array_equal, out['params']['decoder'],
               v['params']['decoder'])


def test_official_checkpoint_file_round_trip(tmp_path):
  torch = pytest.importorskip('torch', reason='requirements-torch.txt')
  v = _tiny_variables()
  sd = {'module.' + k: torch.from_numpy(np.array(a))
        for k, a in convert.to_torch_state_dict(v).items()}
  path = tmp_path / 'model-best.pth.tar'
  torch.save({'segmenter': sd, 'epoch_start': 12, 'best_val': 0.51}, path)
  loaded = convert.load_torch_checkpoint(str(path))
  back = convert.from_torch_state_dict(loaded, 2, template=v)
  jax.tree.map(np.testing.assert_array_equal, back['params'], v['params'])
  with pytest.raises(FileNotFoundError, match='nope.pth'):
    convert.load_torch_checkpoint(str(tmp_path / 'nope.pth'))


def test_missing_torch_says_how_to_install(monkeypatch, tmp_path):
  monkeypatch.setitem(sys.modules, 'torch', None)
  with pytest.raises(ImportError, match='requirements-torch.txt'):
    convert.load_torch_checkpoint(str(tmp_path / 'x.pth'))
