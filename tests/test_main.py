"""main.py's modes: import an official checkpoint, then evaluate it."""

import subprocess
import sys

import jax
import numpy as np
import pytest

from cen_jax import checkpointing
from cen_jax import convert
from cen_jax import train
from tests import paths
from tests.test_train import _config


def test_import_torch_then_eval_uses_the_imported_weights(tmp_path):
  torch = pytest.importorskip('torch', reason='requirements-torch.txt')
  config = _config(tmp_path)
  s = train.setup(config, tmp_path / 'fresh')
  variables = jax.device_get(
      train.start_variables(s, tmp_path / 'fresh', jax.random.key(7)))
  sd = {'module.' + k: torch.from_numpy(np.array(v))
        for k, v in convert.to_torch_state_dict(variables).items()}
  pth = tmp_path / 'model-best.pth.tar'
  torch.save({'segmenter': sd, 'epoch_start': 3, 'best_val': 0.1}, pth)

  workdir = tmp_path / 'run'
  out = train.import_torch(config, str(workdir), str(pth))
  restored = checkpointing.load_variables(out)
  jax.tree.map(np.testing.assert_array_equal, restored,
               {'params': variables['params'],
                'batch_stats': variables['batch_stats']})
  # No trained checkpoint yet: 'best' falls back to the imported weights.
  summary = train.evaluate(config, str(workdir))
  direct = train.eval_summary(s, train.evaluate_split(
      s, train.jit_eval_step(s), train.create_state(s, variables)))
  assert summary == direct
  assert 0.0 <= summary['eval/ensemble/miou'] <= 100.0


def test_unknown_config_file_is_named_in_the_error(tmp_path):
  result = subprocess.run(
      [sys.executable, 'main.py', '--config=configs/no_such_config.py',
       f'--workdir={tmp_path}'], cwd=paths.REPO, capture_output=True,
      text=True, check=False, timeout=120)
  assert result.returncode != 0
  assert 'configs/no_such_config.py' in result.stderr
