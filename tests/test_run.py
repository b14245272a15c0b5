"""cen_jax/run.py: what a run checks before it computes anything."""

import json

from etils import epath
import pytest

from cen_jax import run
from configs import quickstart


def _workdir_with_a_run(tmp_path, config):
  """A workdir as a run leaves it: config.json and a checkpoint step."""
  workdir = epath.Path(tmp_path) / 'work'
  (workdir / 'checkpoints' / 'latest' / '100').mkdir(parents=True)
  (workdir / 'config.json').write_text(json.dumps(config.to_dict()))
  return workdir


def test_resuming_with_another_model_or_data_lists_the_fields(tmp_path):
  config = quickstart.get_config()
  workdir = _workdir_with_a_run(tmp_path, config)
  changed = config.copy_and_resolve_references()
  changed.model.width = 32
  changed.data.modalities = ('rgb', 'hha')
  changed.optim.encoder_lrs = (0.01,)  # safe: allowed
  with pytest.raises(ValueError) as e:
    run.check_same_run(changed, workdir)
  message = str(e.value)
  assert "data.modalities: ['rgb', 'depth'] -> ['rgb', 'hha']" in message
  assert 'model.width: 16 -> 32' in message
  assert 'encoder_lrs' not in message
  # Safe changes alone resume, and so does any change without checkpoints.
  safe = config.copy_and_resolve_references()
  safe.optim.encoder_lrs = (0.01,)
  safe.train.eval_every_epochs = 1
  safe.model.dtype = 'bfloat16'
  run.check_same_run(safe, workdir)
  (workdir / 'checkpoints' / 'latest' / '100').rmdir()
  run.check_same_run(changed, workdir)


def test_an_unwritable_workdir_fails_before_any_compute(tmp_path):
  blocker = tmp_path / 'a_file'
  blocker.write_text('not a directory')
  with pytest.raises(PermissionError, match=r'a_file/run cannot be written'):
    run.train_and_evaluate(quickstart.get_config(), str(blocker / 'run'))


def test_using_a_checkpoint_with_another_model_names_the_fields(tmp_path):
  """eval, predict, analyze and export refuse another model's weights, but
  not other data or training settings."""
  config = quickstart.get_config()
  workdir = _workdir_with_a_run(tmp_path, config)
  other = config.copy_and_resolve_references()
  other.model.num_classes = 40
  for mode in (lambda c: run.evaluate(c, str(workdir)),
               lambda c: run.predict(c, str(workdir), 'in', 'out'),
               lambda c: run.analyze(c, str(workdir)),
               lambda c: run.export_model(c, str(workdir), 'out', height=8,
                                          width=8)):
    with pytest.raises(ValueError, match=r'model.num_classes: 7 -> 40'):
      mode(other)
  inference_only = config.copy_and_resolve_references()
  inference_only.data.crop_size = 500
  inference_only.optim.batch_size = 64
  run.check_same_run(inference_only, workdir, run.MODEL_FIELDS)
