"""Two JAX processes on one machine, as the hosts of a TPU pod slice run.

Each process is started with ``jax.distributed.initialize`` on a local
coordinator (CPU collectives over gloo) and one CPU device, reads its own
shard of the data and saves its own data position in every checkpoint.
"""

import pathlib
import shutil
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from cen_jax import run
from cen_jax import tasks
from cen_jax.training import checkpointing
from cen_jax.training import loop
from tests import paths
from tests.test_loop import _config
from tests.test_loop import _same_jax

_WORKER = '''
import pathlib, sys
import jax
port, pid, workdir, crash_after = sys.argv[1:5]
jax.distributed.initialize(coordinator_address=f'localhost:{port}',
                           num_processes=2, process_id=int(pid))
from cen_jax import run
from cen_jax.training import loop
from tests.test_multiprocess import cache_every_process, config_for
cache_every_process()
if int(crash_after):
  real_jit, calls = loop.jit_train_step, []
  def crashing_jit(trainer, mesh):
    fn = real_jit(trainer, mesh)
    def step(*args):
      calls.append(1)
      if len(calls) > int(crash_after):
        sys.exit(3)  # killed, after the checkpoint of step 2
      return fn(*args)
    return step
  loop.jit_train_step = crashing_jit
run.train_and_evaluate(config_for(pathlib.Path(workdir).parent), workdir)
'''


def cache_every_process() -> None:
  """Let every process of the test write the persistent compile cache.

  JAX writes it from process 0 only, so that the hosts of a pod do not
  contend for one file. On the CPU backend each process's cache key differs
  (it hashes the process's own view of the topology), so process 1 never
  found an entry and compiled every program afresh in each of this test's
  three runs: about 26 s a run, while process 0 waited at the first
  collective. Each process writes under its own key here, so no two write
  one file; the other conditions of JAX's own write (no host callbacks,
  the minimum compile time) still hold.
  """
  # pylint: disable=protected-access,import-outside-toplevel
  from jax._src import compilation_cache
  from jax._src import compiler
  from jax._src import distributed

  write = compiler._cache_write

  def cache_write(cache_key, compile_time_secs, module_name, backend,
                  executable, host_callbacks):
    if (distributed.global_state.process_id == 0 or host_callbacks or
        compile_time_secs < jax.config.values[
            'jax_persistent_cache_min_compile_time_secs']):
      return write(cache_key, compile_time_secs, module_name, backend,
                   executable, host_callbacks)
    compilation_cache.put_executable_and_time(
        cache_key, module_name, executable, backend, int(compile_time_secs))

  compiler._cache_write = cache_write


def config_for(root: pathlib.Path):
  c = _config(root)
  c.optim.stage_epochs = (2,)  # 8 steps of a global batch of 4
  c.train.checkpoint_every_steps = 2
  c.train.eval_every_epochs = 2
  return c


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _two_processes(tmp_path, workdir, crash_after=0) -> list[int]:
  env = _same_jax()
  env['JAX_NUM_CPU_DEVICES'] = '1'  # one device per process, 2 in all
  script = tmp_path / 'worker.py'
  script.write_text(_WORKER)
  port = _free_port()
  procs = [subprocess.Popen(
      [sys.executable, str(script), str(port), str(i), str(workdir),
       str(crash_after)], cwd=paths.REPO, env=dict(env, PYTHONPATH=str(
           paths.REPO)), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
      text=True) for i in range(2)]
  codes = []
  for p in procs:
    out, _ = p.communicate(timeout=600)
    codes.append(p.returncode)
    if p.returncode not in (0, 3):
      raise AssertionError(out[-4000:])
  return codes


def _final(config, workdir):
  task = tasks.build(config, workdir)
  # Saved by 2 processes: restore onto this process's first device.
  template = loop.abstract_state(
      task, task.trainer(), jax.sharding.SingleDeviceSharding(jax.devices()[0]))
  with checkpointing.Checkpointer(workdir) as ckpt:
    return jax.device_get(ckpt.restore_latest(template).state)


@pytest.mark.slow
def test_multiprocess_run_resumes_bit_identical_to_an_uninterrupted_one(
    tmp_path):
  config = config_for(tmp_path)
  # Both processes generate the synthetic data into one data_dir at once:
  # whichever finishes second uses the first one's copy.
  straight, resumed = tmp_path / 'straight', tmp_path / 'resumed'
  assert _two_processes(tmp_path, straight) == [0, 0]
  assert _two_processes(tmp_path, resumed, crash_after=3) == [3, 3]
  step_dir = resumed / 'checkpoints' / 'latest' / '2'
  assert sorted(p.name for p in (step_dir / 'iterator').iterdir()
                if p.name.startswith('process_')) == [
                    'process_0-of-2.json', 'process_1-of-2.json']
  with checkpointing.Checkpointer(resumed) as ckpt:
    assert ckpt.latest_step == 2
  # One process cannot take over the data positions of two.
  single = tmp_path / 'single'
  shutil.copytree(resumed, single)
  with pytest.raises(checkpointing.DataPositionError,
                     match=r'this run has 1 and would need process_0-of-1'):
    run.train_and_evaluate(config, str(single))

  assert _two_processes(tmp_path, resumed) == [0, 0]
  a, b = _final(config, straight), _final(config, resumed)
  assert int(a['step']) == int(b['step']) == 8
  jax.tree.map(np.testing.assert_array_equal, a, b)
  # The processes read different data: the run is not one process twice.
  assert np.abs(a['batch_stats']['encoder']['bn1']['mean']).max() > 0
