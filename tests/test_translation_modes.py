"""main.py's translation modes (``cen_jax/tasks/translation/modes.py``) and
``--mode=eval``, each on the tiny workdir test_translation_task.py trains
(shared within a session), restored as a user would.
"""

import functools
import json
import logging
import shutil

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from cen_jax import run
from cen_jax import tasks
from cen_jax.tasks.translation import convert
from cen_jax.tasks.translation import steps
from cen_jax.tasks.translation.task import to_uint8
from cen_jax.training import checkpointing
from cen_jax.training import loop
from data import synthetic_translation
from data import taskonomy
from tests.test_translation_task import OUTPUTS
from tests.test_translation_task import restore
from tests.test_translation_task import trained_run

INPUTS = ('reshading', 'edge_texture')
SIZE = 32  # config.data.crop_size


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  return trained_run(tmp_path_factory)


@functools.lru_cache(maxsize=1)
def _translate_fn(generator):
  return jax.jit(functools.partial(steps.translate, generator,
                                   protocol='official'))


def _translate(trained_, x, index):
  """``(M + 1, B, H, W, 3)`` of the best checkpoint, official protocol."""
  variables, _ = restore(trained_)
  task = tasks.build(trained_.config, trained_.workdir)
  return np.asarray(_translate_fn(task.generator)(
      variables['generator'], jnp.asarray(x), jnp.asarray(index)))


def _normalised(folder, name, domain):
  """A domain image as evaluation sees it, by hand: the official per-domain
  preprocessing, PIL bilinear to 32 x 32, ``(x / 255 - 0.5) / 0.5``."""
  image = taskonomy.load_domain(folder / domain / f'{name}_domain_{domain}.png',
                                domain)
  image = np.asarray(Image.fromarray(image).resize(
      (SIZE, SIZE), Image.Resampling.BILINEAR)).astype(np.float32)
  return (image / np.float32(255) - np.float32(0.5)) / np.float32(0.5)


def _png(path):
  return np.asarray(Image.open(path))


def test_eval_mode_writes_the_summary_as_scores(trained):
  summary = run.evaluate(trained.config, str(trained.workdir))
  # The best checkpoint (step 4), evaluated as during training.
  assert summary == trained.evals[4]
  report = trained.workdir / 'eval' / '4'
  scores = json.loads((report / 'scores.json').read_text())
  assert scores == {k: round(v, 4) for k, v in summary.items()}
  lines = (report / 'scores.md').read_text().splitlines()
  assert lines[0] == 'reshading, edge_texture -> rgb, official protocol'
  assert lines[2] == '| output | L1 | RMSE |'
  assert lines[-1] == (f'| ensemble | {summary["eval/ensemble/l1"]:.4f} | '
                       f'{summary["eval/ensemble/rmse"]:.4f} |')


def test_predict_equals_translate_on_the_same_inputs(trained, tmp_path):
  folder = synthetic_translation.write_taskonomy_folder(
      tmp_path / 'scenes', num_train=0, num_test=2, size=40, seed=5)
  names = ['point_0_view_1', 'point_1_view_1']
  out = tmp_path / 'out'
  written = run.predict(trained.config, str(trained.workdir), str(folder),
                        str(out))
  assert written == {n: out / f'{n}.png' for n in names}
  for index, name in enumerate(names):
    inputs = np.stack([_normalised(folder, name, d) for d in INPUTS])
    target = _normalised(folder, name, 'rgb')
    # Examples are seeded by their position in name order, as in eval.
    result = _translate(trained, inputs[:, None], [index])[:, 0]
    np.testing.assert_array_equal(_png(written[name]), to_uint8(result[2]))
    for o, output in enumerate(OUTPUTS):
      np.testing.assert_array_equal(
          _png(out / 'all' / f'{name}_{output}.png'), to_uint8(result[o]))
    # inputs | reshading | edge_texture | ensemble | target.
    np.testing.assert_array_equal(
        _png(out / 'grid' / f'{name}.png'),
        to_uint8(np.concatenate([*inputs, *result, target], axis=1)))
  # Not vacuous: the branches differ from the ensemble.
  assert not np.array_equal(_png(out / 'all' / f'{name}_reshading.png'),
                            _png(written[name]))
  branch = run.predict(trained.config, str(trained.workdir), str(folder),
                       str(tmp_path / 'branch'), output='edge_texture')
  np.testing.assert_array_equal(
      _png(branch[name]), _png(out / 'all' / f'{name}_edge_texture.png'))


def test_predict_names_a_bad_output_or_a_missing_domain(trained, tmp_path):
  with pytest.raises(ValueError, match=(
      r"--prediction_output 'rgb': choose one of \['reshading', "
      r"'edge_texture', 'ensemble'\]")):
    run.predict(trained.config, str(trained.workdir), str(tmp_path),
                str(tmp_path / 'out'), output='rgb')
  folder = synthetic_translation.write_taskonomy_folder(
      tmp_path / 'scenes', num_train=0, num_test=1, size=40, seed=5)
  shutil.rmtree(folder / 'edge_texture')
  with pytest.raises(FileNotFoundError,
                     match=r'scenes/edge_texture: missing; predict reads one '
                     r'sub-folder per input domain'):
    run.predict(trained.config, str(trained.workdir), str(folder),
                str(tmp_path / 'out'))


def test_analyze_lists_the_exchange_sites(trained):
  paths = run.analyze(trained.config, str(trained.workdir))
  assert paths['table'].parent == trained.workdir / 'analysis' / '4'
  text = paths['table'].read_text()
  assert text.startswith('Exchanged encoder IN channels, bn_threshold '
                         'exchange, checkpoint step 4')
  # Encoder widths 4, 8, 16, 32, 32: sites conv2..conv4 (not the first
  # and the innermost block).
  sites = [line.split(' | ')[:2] for line in text.splitlines()
           if line.startswith('| conv') or line.startswith('| all')]
  assert sites == [['| conv2', '8'], ['| conv3', '16'], ['| conv4', '32'],
                   ['| all', '56']]
  for key in ('fractions', 'histograms'):
    image = _png(paths[key])
    assert image.ndim == 3 and image.shape[0] >= 250


def test_analyze_counts_the_scales_below_the_threshold(trained, tmp_path):
  variables, _ = restore(trained)
  variables = jax.tree.map(np.array, variables)  # writable host copies
  params = variables['generator']['params']
  for site in ('conv2', 'conv3', 'conv4'):
    params[site]['norm']['scale'][:] = 1.0
  scale = params['conv2']['norm']['scale']  # (M, 8)
  scale[0, [0, 5]] = [0.005, -0.0099]  # reshading: 2 of 8 below 1e-2
  scale[1, 3] = 0.0  # edge_texture: 1 of 8
  params['conv3']['norm']['scale'][1, 2] = 0.02  # not below
  workdir = tmp_path / 'imported'
  checkpointing.save_variables(workdir / loop.IMPORTED_DIR, variables)
  paths = run.analyze(trained.config, str(workdir), checkpoint='imported')
  assert paths['table'].parent == workdir / 'analysis' / '0'
  table = paths['table'].read_text()
  assert '| conv2 | 8 | 25.0% | 12.5% |' in table
  assert '| conv3 | 16 | 0.0% | 0.0% |' in table
  assert '| conv4 | 32 | 0.0% | 0.0% |' in table
  # 2 and 1 of the 8 + 16 + 32 = 56 channels.
  assert '| all | 56 | 3.6% | 1.8% |' in table


def test_export_round_trip_equals_translate(trained, tmp_path):
  variables, step = restore(trained)
  x = np.random.default_rng(3).uniform(-1, 1, (2, 3, 32, 64, 3))
  x = x.astype(np.float32)
  want = _translate(trained, x, np.arange(3))
  assert want.shape == (3, 3, 32, 64, 3)
  paths = run.export_model(trained.config, str(trained.workdir),
                           str(tmp_path / 'baked'), height=32, width=64,
                           platforms=('cpu',))
  jax.tree.map(np.testing.assert_array_equal,
               checkpointing.load_variables(paths['params']),
               jax.device_get(variables))
  exported = jax.export.deserialize(bytearray(paths['export'].read_bytes()))
  np.testing.assert_allclose(exported.call(x), want, rtol=1e-5, atol=1e-5)
  spec = json.loads(paths['spec'].read_text())
  assert spec['checkpoint_step'] == step == 4
  assert spec['call'] == 'exported.call(x)'
  assert spec['protocol'] == 'official'
  assert spec['input']['shape'] == [2, 'b', 32, 64, 3]
  assert spec['input']['domains'] == list(INPUTS)
  assert spec['output']['shape'] == [3, 'b', 32, 64, 3]
  assert spec['output']['order'] == list(OUTPUTS)

  paths = run.export_model(trained.config, str(trained.workdir),
                           str(tmp_path / 'unbaked'), height=32, width=64,
                           batch=3, bake_variables=False,
                           platforms=('cpu',))
  exported = jax.export.deserialize(bytearray(paths['export'].read_bytes()))
  np.testing.assert_allclose(
      exported.call(jax.device_get(variables['generator']), x), want,
      rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match=r'--export_size=40,64: the generator '
                     r'needs multiples of 32'):
    run.export_model(trained.config, str(trained.workdir),
                     str(tmp_path / 'bad'), height=40, width=64)


def _save_official(variables, folder, networks):
  """``checkpoint-gen.pkl`` / ``checkpoint-dis.pkl`` as the official saves
  them: plain state dicts of tensors."""
  torch = pytest.importorskip('torch', reason='requirements-torch.txt')
  folder.mkdir(parents=True)
  files = {'generator': 'checkpoint-gen.pkl',
           'discriminator': 'checkpoint-dis.pkl'}
  for net in networks:
    state_dict = convert.to_torch_state_dict(variables[net], net)
    torch.save({k: torch.from_numpy(np.array(v))
                for k, v in state_dict.items()}, folder / files[net])
  return folder / files['generator']


def test_import_torch_round_trips_both_networks(trained, tmp_path):
  config = trained.config
  variables = jax.device_get(restore(trained)[0])
  gen = _save_official(variables, tmp_path / 'official',
                       ('generator', 'discriminator'))
  workdir = tmp_path / 'work'
  out = run.import_torch(config, str(workdir), str(gen))
  assert out == str(workdir / loop.IMPORTED_DIR)
  got, step = loop.restore_variables(tasks.build(config, workdir), workdir,
                                     'imported')
  assert step == 0
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(got),
               variables)


def test_import_torch_without_the_critic_initialises_it(trained, tmp_path,
                                                        caplog):
  config = trained.config
  variables = jax.device_get(restore(trained)[0])
  gen = _save_official(variables, tmp_path / 'official', ('generator',))
  workdir = tmp_path / 'work'
  with caplog.at_level(logging.WARNING):
    run.import_torch(config, str(workdir), str(gen))
  said = [r.getMessage() for r in caplog.records
          if 'No checkpoint-dis file beside' in r.getMessage()]
  assert said == [f'No checkpoint-dis file beside {gen}: the discriminator '
                  'is randomly initialised']
  task = tasks.build(config, workdir)
  got = jax.device_get(loop.restore_variables(task, workdir, 'imported')[0])
  jax.tree.map(np.testing.assert_array_equal, got['generator'],
               variables['generator'])
  template = loop.abstract_variables(task)['discriminator']
  assert jax.tree.map(np.shape, got['discriminator']) == jax.tree.map(
      lambda s: s.shape, template)
  assert not np.array_equal(
      jax.tree.leaves(got['discriminator']['params'])[0],
      jax.tree.leaves(variables['discriminator']['params'])[0])
