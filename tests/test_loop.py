"""The training loop: sharding, resume and fault handling, end to end.

Run on the segmentation task (the tiny model on the built-in dataset).
"""

import functools
import os
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cen_jax import run
from cen_jax import tasks
from cen_jax.tasks.segmentation import steps
from cen_jax.training import checkpointing
from cen_jax.training import loop
from cen_jax.training import parallel
from configs import quickstart
from tests import crash
from tests import paths


def _config(tmp_path, **train_overrides):
  c = quickstart.get_config()
  c.data.name = 'synthetic_rgbd/tiny'  # 32x32, 16 train / 8 test
  c.data.data_dir = str(tmp_path / 'tfds')
  c.data.crop_size = 32
  c.data.shorter_side = 24
  c.model.width = 8
  c.model.decoder_features = (16, 16)
  c.optim.batch_size = 4
  c.optim.encoder_lrs = (0.01,)
  c.optim.decoder_lrs = (0.01,)
  c.optim.stage_epochs = (1,)  # 4 steps
  c.optim.l1_coef = 6e-4  # The official effective coefficient.
  c.train.log_every_steps = 1
  c.train.eval_every_epochs = 100  # only at the end
  c.train.checkpoint_every_steps = 2
  c.eval.batch_size = 4
  for k, v in train_overrides.items():
    c.train[k] = v
  return c


def _random_batch(batch, num_modalities=2, size=32, classes=7, seed=0):
  rng = np.random.default_rng(seed)
  label = rng.integers(0, classes, (batch, size, size)).astype(np.int32)
  label[:, :3] = 255
  return {
      'inputs': rng.standard_normal(
          (batch, num_modalities, size, size, 3)).astype(np.float32),
      'label': label,
      'valid': np.ones((batch,), bool),
  }


def _setup_on(tmp_path, devices):
  """``(trainer, mesh, state)`` of the tiny task on ``devices``."""
  task = tasks.build(_config(tmp_path), tmp_path)
  trainer = task.trainer()
  mesh = parallel.make_mesh(devices)
  variables = loop.start_variables(task, tmp_path, jax.random.key(0),
                                   parallel.replicated(mesh))
  return trainer, mesh, loop.create_state(trainer, mesh, variables)


@pytest.fixture(scope='module')
def three_steps(tmp_path_factory):
  """``{devices: (state, first step's metrics, last step's metrics,
  programs compiled)}`` after three steps on 1 and on 4 devices, from the
  same start."""
  tmp_path = tmp_path_factory.mktemp('steps')
  results = {}
  for devices in (jax.devices()[:1], jax.devices()[:4]):
    trainer, mesh, state = _setup_on(tmp_path, devices)
    step_fn = loop.jit_train_step(trainer, mesh)
    metrics = []
    for i in range(3):
      batch = parallel.global_batch(_random_batch(4, seed=i), mesh)
      state, m = step_fn(state, batch, jax.random.key(1))
      metrics.append(jax.device_get(m.compute()))
    assert len(state['params']['alpha'].sharding.device_set) == len(devices)
    programs = step_fn._cache_size()  # pylint: disable=protected-access
    results[len(devices)] = (jax.device_get(state), metrics[0], metrics[-1],
                             programs)
  return results


def test_sharded_step_equals_single_device_step_and_does_not_recompile(
    three_steps):
  (one, _, m1, programs1), (four, _, m4, programs4) = (three_steps[1],
                                                      three_steps[4])
  assert programs1 == programs4 == 1
  np.testing.assert_allclose(m1['loss'], m4['loss'], rtol=1e-5)
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=2e-4,
                                 atol=1e-6),
               (one['params'], one['batch_stats']),
               (four['params'], four['batch_stats']))
  # Batch statistics moved: the comparison above is not vacuous.
  assert np.abs(one['batch_stats']['encoder']['bn1']['mean']).max() > 0
  assert int(one['step']) == 3


def test_variable_shapes_are_traced_once_per_task(tmp_path, monkeypatch):
  """The loop asks for them at restore, overview and eval: one trace."""
  task = tasks.build(_config(tmp_path), tmp_path)
  traces = []
  init = task.init_variables
  monkeypatch.setattr(task, 'init_variables',
                      lambda rng: traces.append(1) or init(rng))
  rep = parallel.replicated(parallel.make_mesh(jax.devices()[:2]))
  plain, sharded = loop.abstract_variables(task), loop.abstract_variables(
      task, rep)
  loop.abstract_state(task, task.trainer(), rep)
  assert len(traces) == 1
  kernel = ('params', 'decoder', 'clf_conv', 'kernel')
  get = lambda tree: functools.reduce(lambda t, k: t[k], kernel, tree)
  assert get(plain).shape == get(sharded).shape == (3, 3, 16, 7)
  assert get(plain).sharding is None and get(sharded).sharding == rep
  # Another task object gets its own trace, of the same shapes here.
  other = tasks.build(_config(tmp_path), tmp_path)
  assert loop.abstract_variables(other) == plain


def test_reported_loss_adds_the_l1_term(three_steps):
  """loss = CE total + 6e-4 * sum|gamma| over the slices, as officially."""
  _, m, _, _ = three_steps[1]  # the first step's, from gamma = 1
  # Width 8: bn2 widths 8, 16, 32, 64 with gamma = 1, each modality
  # penalised on its half: 2 * (4 + 8 + 16 + 32) = 120.
  np.testing.assert_allclose(float(m['l1']), 120.0)
  np.testing.assert_allclose(float(m['loss']) - float(m['ce_total']),
                             6e-4 * 120.0, rtol=1e-5)


def _resume_config(root):
  """The resume tests' run: 12 steps of an exchange that draws a new random
  subset every step (a resume must also restore the key stream), with a
  checkpoint every 2 steps. The tests share its programs and its
  uninterrupted run."""
  c = _config(root)
  c.model.exchange = 'random_per_step'
  c.model.exchange_kwargs = {'ratio': 0.25}
  c.optim.stage_epochs = (3,)  # 12 steps
  return c


@pytest.fixture(scope='module')
def straight_run(tmp_path_factory):
  """The final state of an uninterrupted run of ``_resume_config``."""
  root = tmp_path_factory.mktemp('straight')
  config = _resume_config(root)
  run.train_and_evaluate(config, str(root / 'run'))
  return _final_state(config, root / 'run')


def test_killed_run_resumes_to_identical_parameters(tmp_path, monkeypatch,
                                                   straight_run):
  config = _resume_config(tmp_path)
  resumed = tmp_path / 'resumed'
  crash.train_killed_at_call(monkeypatch, config, resumed)
  with checkpointing.Checkpointer(resumed) as ckpt:
    assert ckpt.latest_step == 2
  summary = run.train_and_evaluate(config, str(resumed))
  assert 'eval/ensemble/miou' in summary
  b = _final_state(config, resumed)
  assert int(straight_run['step']) == int(b['step']) == 12
  jax.tree.map(np.testing.assert_array_equal, straight_run, b)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(
    tmp_path, monkeypatch):
  real_step = steps.train_step

  def poisoned(state, batch, rng, **kw):
    new_state, m = real_step(state, batch, rng, **kw)
    m['loss'] = jnp.where(state['step'] >= 2, jnp.nan, m['loss'])
    return new_state, m

  monkeypatch.setattr(steps, 'train_step', poisoned)
  workdir = tmp_path / 'run'
  with pytest.raises(FloatingPointError, match='at step 3'):
    run.train_and_evaluate(_config(tmp_path), str(workdir))
  with checkpointing.Checkpointer(workdir) as ckpt:
    assert ckpt.latest_step == 2


@pytest.mark.slow
def test_preemption_sigterm_saves_at_a_step_boundary_and_resumes(
    tmp_path, straight_run):
  """SIGTERM to a training process mid-run: it saves the step it is at and
  exits cleanly; the rerun resumes there and ends bit-identical to an
  uninterrupted run."""
  (tmp_path / 'preempt_config.py').write_text(
      'import pathlib\n'
      'from tests.test_loop import _preemption_config\n'
      'def get_config():\n'
      f'  return _preemption_config(pathlib.Path({str(tmp_path)!r}))\n')
  config = _preemption_config(tmp_path)
  workdir = tmp_path / 'preempted'
  child = subprocess.Popen(
      [sys.executable, 'main.py',
       f'--config={tmp_path / "preempt_config.py"}', f'--workdir={workdir}'],
      cwd=paths.REPO, stderr=subprocess.PIPE, text=True, env=_same_jax())
  log = []
  for line in child.stderr:  # absl logs to stderr
    log.append(line)
    if '] [3] train/' in line:  # mid-run: 3 of 12 steps logged
      child.send_signal(signal.SIGTERM)
      break
  log += child.stderr.readlines()
  assert child.wait(timeout=300) == 0, ''.join(log[-30:])
  stopped = [line for line in log if 'Stopped by SIGTERM after step' in line]
  assert stopped, ''.join(log[-30:])
  with checkpointing.Checkpointer(workdir) as ckpt:
    saved = ckpt.latest_step
  assert 3 <= saved < 12 and f'latest/{saved}' in stopped[0]

  run.train_and_evaluate(config, str(workdir))
  b = _final_state(config, workdir)
  assert int(straight_run['step']) == int(b['step']) == 12
  jax.tree.map(np.testing.assert_array_equal, straight_run, b)


def _same_jax() -> dict[str, str]:
  """Environment for a child that compiles as this test process does (the
  same devices and XLA options), so their floats agree bit for bit."""
  names = ('jax_platforms', 'jax_num_cpu_devices',
           'jax_disable_most_optimizations', 'jax_compilation_cache_dir',
           'jax_persistent_cache_min_compile_time_secs',
           'jax_persistent_cache_min_entry_size_bytes')
  values = {n: jax.config.values[n] for n in names}
  env = {n.upper(): str(v).lower() if isinstance(v, bool) else str(v)
         for n, v in values.items() if v is not None}
  return dict(os.environ, PYTHONUNBUFFERED='1', **env)


def _preemption_config(tmp_path):
  c = _resume_config(tmp_path)
  c.train.checkpoint_every_steps = 0  # only at the end
  return c


def _final_state(config, workdir):
  task = tasks.build(config, workdir)
  template = loop.abstract_state(task, task.trainer())
  with checkpointing.Checkpointer(workdir) as ckpt:
    return jax.device_get(ckpt.restore_latest(template).state)
