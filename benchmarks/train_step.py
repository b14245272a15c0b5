r"""Speed and memory of the jitted train (and eval) step, on random batches.

  python -m benchmarks.train_step --config=configs/quickstart.py \
    --depth=50 --batch_size=8 --resolution=64,64 --steps=20

Builds the model, the optimiser and the sharded, donating train step exactly
as training does (the segmentation task's ``trainer_for``, then
``loop.create_state`` and ``loop.jit_train_step`` over the loop's mesh),
feeds it one
random batch of the input-pipeline contract (``'inputs'`` ``(B, M, H, W, 3)``
float32, ``'label'`` ``(B, H, W)`` int32 with some 255, ``'valid'`` ``(B,)``)
and prints: compile time (lower + compile), median and p90 step time over
``--steps`` timed steps after ``--warmup`` untimed ones (each step waited
for with ``block_until_ready``), images/s, XLA's FLOP count of the compiled
step and the FLOP/s achieved, and peak memory (the device's
``peak_bytes_in_use`` where the backend reports it, else the process's max
RSS). ``--eval`` adds the same for the forward eval step. No dataset is
read, so the input pipeline is not measured. The same command runs on CPU,
GPU and TPU; any config field can also be overridden, e.g.
``--config.model.exchange=none``.
"""

if __name__ == '__main__':
  # Restart before the heavy imports, as main.py does.
  from cen_jax.training import host_memory  # pylint: disable=g-import-not-at-top
  host_memory.reexec_with_kept_memory()

import json
import shlex
import sys
import time
from typing import Any, Callable

from absl import app
from absl import flags
import flax
import jax
import ml_collections
from ml_collections import config_flags
import numpy as np

from benchmarks import common
from cen_jax import tasks
from cen_jax.tasks.segmentation import models
from cen_jax.training import loop
from cen_jax.training import parallel
from cen_jax.training import state as state_lib

_CONFIG = config_flags.DEFINE_config_file(
    'config', 'configs/quickstart.py', 'Config file (configs/*.py).',
    lock_config=True)
_DEPTH = flags.DEFINE_string(
    'depth', None, "ResNet depth: 50, 101, 152 or tiny; default: the config's.")
_BATCH = flags.DEFINE_integer(
    'batch_size', None, "Global batch size; default: the config's.")
_RESOLUTION = flags.DEFINE_list(
    'resolution', None, "H,W of the inputs; default: the config's crop.")
_MODALITIES = flags.DEFINE_integer(
    'num_modalities', None, "M; default: the config's modality count.")
_DTYPE = flags.DEFINE_enum(
    'dtype', None, list(models.DTYPES), "Compute dtype; default: the config's.")
_STEPS = flags.DEFINE_integer('steps', 20, 'Timed steps.')
_WARMUP = flags.DEFINE_integer('warmup', 3, 'Untimed steps before timing.')
_EVAL = flags.DEFINE_bool('eval', False, 'Also time the forward eval step.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the weights and the batch.')
_JSON_OUT = flags.DEFINE_string(
    'json_out', None, 'Also write the measured rows as JSON to this file.')

# The schedules need an epoch length; it changes learning rates, not speed.
_NOMINAL_STEPS_PER_EPOCH = 100
_IGNORE_FRACTION = 0.05
_EXTRA_MODALITIES = ('rgb', 'depth', 'hha')


def bench_config(base: ml_collections.ConfigDict
                 ) -> ml_collections.ConfigDict:
  """``base`` with the flags' model depth, batch, size, M and dtype."""
  c = base.copy_and_resolve_references()
  if _DEPTH.value is not None:
    c.model.depth = _DEPTH.value
  if _BATCH.value is not None:
    c.optim.batch_size = _BATCH.value
  if _MODALITIES.value is not None:
    m = _MODALITIES.value
    # Only the count matters: no data is read.
    c.data.modalities = tuple(_EXTRA_MODALITIES[i] if i < 3 else f'm{i}'
                              for i in range(m))
  if _DTYPE.value is not None:
    c.model.dtype = _DTYPE.value
  return c


def resolution(config: ml_collections.ConfigDict) -> tuple[int, int]:
  if _RESOLUTION.value is None:
    return config.data.crop_size, config.data.crop_size
  if len(_RESOLUTION.value) != 2:
    raise app.UsageError(f'--resolution takes H,W: {_RESOLUTION.value}')
  h, w = (int(v) for v in _RESOLUTION.value)
  return h, w


def make_task(config: ml_collections.ConfigDict):
  """``(task, trainer, mesh)`` without any data: model, optimiser, mesh."""
  mesh = parallel.make_mesh()
  parallel.check_divisible(config.optim.batch_size, mesh, 'batch size')
  task = tasks.build(config, workdir='/nonexistent')  # Reads no data.
  return task, task.trainer_for(_NOMINAL_STEPS_PER_EPOCH), mesh


def random_batch(config: ml_collections.ConfigDict, size: tuple[int, int],
                 mesh: jax.sharding.Mesh, seed: int) -> dict[str, jax.Array]:
  """A batch of the input-pipeline contract, sharded as in training."""
  rng = np.random.default_rng(seed)
  b = parallel.local_batch_size(config.optim.batch_size)
  m, (h, w) = len(config.data.modalities), size
  label = rng.integers(0, config.model.num_classes, (b, h, w), np.int32)
  label[rng.random((b, h, w)) < _IGNORE_FRACTION] = 255
  local = {
      'inputs': rng.standard_normal((b, m, h, w, 3), np.float32),
      'label': label,
      'valid': np.ones((b,), bool),
  }
  return parallel.global_batch(local, mesh)


def time_compiled(call: Callable[[], Any], warmup: int,
                  steps: int) -> np.ndarray:
  """Seconds of each of ``steps`` calls after ``warmup`` untimed calls."""
  for _ in range(warmup):
    jax.block_until_ready(call())
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    jax.block_until_ready(call())
    times.append(time.perf_counter() - start)
  return np.asarray(times)


def measure(jitted, args: tuple[Any, ...], *, donates_state: bool,
            batch_size: int) -> dict[str, Any]:
  """Compiles ``jitted`` for ``args`` and times it; a row of the table."""
  start = time.perf_counter()
  lowered = jitted.lower(*args)
  lower_s = time.perf_counter() - start
  compiled = lowered.compile()
  compile_s = time.perf_counter() - start
  holder = list(args)

  def call():
    out = compiled(*holder)
    if donates_state:
      holder[0] = out[0]  # The old state was donated: carry the new one.
    return out

  times = time_compiled(call, _WARMUP.value, _STEPS.value)
  flops = common.flops_of(compiled)
  median = float(np.median(times))
  mem, mem_label = common.peak_memory()
  return {
      'lower_s': lower_s, 'compile_s': compile_s, 'median_s': median,
      'p90_s': float(np.percentile(times, 90)),
      'images_per_s': batch_size / median, 'flops': flops,
      'flops_per_s': None if flops is None else flops / median,
      'memory': mem, 'memory_label': mem_label, 'state': holder[0],
  }


def header(config: ml_collections.ConfigDict, size: tuple[int, int],
           params: Any) -> str:
  dev = jax.devices()[0]
  count = sum(x.size for x in jax.tree.leaves(params))
  m = config.model
  return '\n'.join([
      'command: python -m benchmarks.train_step ' + ' '.join(
          shlex.quote(a) for a in sys.argv[1:]),
      f'jax {jax.__version__}, flax {flax.__version__}, backend '
      f'{jax.default_backend()}, {jax.device_count()} x {dev.device_kind}',
      f'model: depth {m.depth}, width {m.width}, decoder '
      f'{tuple(m.decoder_features)}, exchange {m.exchange}, bn {m.bn_mode}, '
      f'dtype {m.dtype}, {count:,} parameters',
      f'batch {config.optim.batch_size} x M {len(config.data.modalities)} x '
      f'{size[0]}x{size[1]}, {m.num_classes} classes; {_WARMUP.value} warm-up'
      f' + {_STEPS.value} timed steps',
  ])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  config = bench_config(_CONFIG.value)
  size = resolution(config)
  task, trainer, mesh = make_task(config)
  init_rng, dropout_rng = jax.random.split(jax.random.key(_SEED.value))
  state = loop.create_state(trainer, mesh,
                            jax.jit(task.init_variables)(init_rng))
  top = header(config, size, state['params'])
  batch = random_batch(config, size, mesh, _SEED.value)
  batch_size = config.optim.batch_size
  rows = {'train step': measure(
      loop.jit_train_step(trainer, mesh), (state, batch, dropout_rng),
      donates_state=True, batch_size=batch_size)}
  if _EVAL.value:
    variables = state_lib.subtree(rows['train step']['state'],
                                  loop.abstract_variables(task))
    rows['eval step'] = measure(
        loop.jit_eval_step(task, mesh), (variables, batch),
        donates_state=False, batch_size=batch_size)
  print('\n'.join(['', top, '', common.table(rows), '']))
  if _JSON_OUT.value:
    with open(_JSON_OUT.value, 'w') as f:
      json.dump({name: {k: v for k, v in row.items() if k != 'state'}
                 for name, row in rows.items()}, f, indent=1)


if __name__ == '__main__':
  app.run(main)
