"""main.py's modes: import an official checkpoint, then evaluate it."""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from cen_jax import run
from cen_jax import tasks
from cen_jax.tasks.segmentation import convert
from cen_jax.training import checkpointing
from cen_jax.training import loop
from cen_jax.training import parallel
from tests import paths
from tests.test_loop import _config


def test_import_torch_then_eval_uses_the_imported_weights(tmp_path):
  torch = pytest.importorskip('torch', reason='requirements-torch.txt')
  config = _config(tmp_path)
  task = tasks.build(config, tmp_path / 'fresh')
  variables = jax.device_get(task.start_variables(jax.random.key(7)))
  sd = {'module.' + k: torch.from_numpy(np.array(v))
        for k, v in convert.to_torch_state_dict(variables).items()}
  pth = tmp_path / 'model-best.pth.tar'
  torch.save({'segmenter': sd, 'epoch_start': 3, 'best_val': 0.1}, pth)

  workdir = tmp_path / 'run'
  out = run.import_torch(config, str(workdir), str(pth))
  restored = checkpointing.load_variables(out)
  jax.tree.map(np.testing.assert_array_equal, restored,
               {'params': variables['params'],
                'batch_stats': variables['batch_stats']})
  # No trained checkpoint yet: 'best' falls back to the imported weights.
  # A user evaluating official weights may have no training split that
  # fits the training batch: evaluation must not need one.
  with config.unlocked():
    config.optim.batch_size = 64  # > the 16 training examples
  summary = run.evaluate(config, str(workdir))
  mesh = parallel.make_mesh()
  direct = task.summarize(loop.evaluate_split(
      task, loop.jit_eval_step(task, mesh),
      jax.device_put(variables, parallel.replicated(mesh)), mesh))
  assert summary == direct
  assert 0.0 <= summary['eval/ensemble/miou'] <= 100.0
  # The report: scores with 4 decimals, per-class tables with the class
  # names, and every output's confusion matrix as .npy and .png.
  report = workdir / 'eval' / '0'
  scores = json.loads((report / 'scores.json').read_text())
  assert scores['outputs']['ensemble']['miou'] == round(
      summary['eval/ensemble/miou'], 4)
  assert scores['class_names'] == list(task.class_names)
  assert 'floor' in (report / 'per_class_iou.md').read_text()
  for name in ('rgb', 'depth', 'ensemble'):
    conf = np.load(report / f'confusion_{name}.npy')
    assert conf.shape == (7, 7) and conf.dtype == np.int64
    assert (report / f'confusion_{name}.png').read_bytes()[:4] == b'\x89PNG'
  # 8 test images of 32 x 32, minus the ignored pixels, in every matrix.
  assert conf.sum() == scores['pixels']['ensemble']


def test_unknown_config_file_is_named_in_the_error(tmp_path):
  result = subprocess.run(
      [sys.executable, 'main.py', '--config=configs/no_such_config.py',
       f'--workdir={tmp_path}'], cwd=paths.REPO, capture_output=True,
      text=True, check=False, timeout=120)
  assert result.returncode != 0
  assert 'configs/no_such_config.py' in result.stderr


@pytest.mark.parametrize('args, message', [
    (['--mode=fit'], 'flag --mode=fit: value should be one of'),
    (['--mode=import_torch'], '--mode=import_torch needs --torch_checkpoint'),
    (['--mode=predict', '--input=x'], '--mode=predict needs --input and '
     '--output'),
])
def test_bad_command_lines_say_what_is_wrong(tmp_path, args, message):
  result = subprocess.run(
      [sys.executable, 'main.py', '--config=configs/quickstart.py',
       f'--workdir={tmp_path}'] + args, cwd=paths.REPO, capture_output=True,
      text=True, check=False, timeout=120)
  assert result.returncode != 0
  assert message in result.stderr
