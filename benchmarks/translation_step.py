r"""Speed and memory of the translation train and eval steps, random batches.

  python -m benchmarks.translation_step --config=configs/taskonomy_cen.py \
    --batch_size=1 --resolution=256,256 --steps=5 --warmup=1

The translation counterpart of ``benchmarks/train_step.py``. Builds the
generator, the discriminator, their two Adam optimisers and the sharded,
donating train step exactly as training does (the translation task's
``trainer_for``, then ``loop.create_state`` and ``loop.jit_train_step`` over
the loop's mesh): one step is the official discriminator update followed by
the generator update on a fresh generator forward. The eval column is the
task's eval step (``loop.jit_eval_step``): the generator forward under the
config's protocol (``'official'``: per-image InstanceNorm statistics and
dropout on, each example on its own) and the error sums of every branch and
the ensemble, plus the Inception features when
``config.eval.inception_weights`` is set. Both are fed one random batch of
the input-pipeline contract (``'inputs'`` ``(B, M, H, W, 3)`` and
``'target'`` ``(B, H, W, 3)`` float32 in [-1, 1], ``'valid'``, ``'index'``)
and the same table as ``train_step.py`` is printed: compile time (lower +
compile), median and p90 step time over ``--steps`` timed steps after
``--warmup`` untimed ones (each waited for with ``block_until_ready``),
images/s (examples of M inputs each), XLA's FLOP count of the compiled step
with the FLOP/s achieved, and peak memory (the device's
``peak_bytes_in_use`` where the backend reports it, else the process's max
RSS). No dataset is read. The same command runs on CPU, GPU and TPU; any
config field can be overridden, e.g. ``--config.model.exchange=none``.
"""

if __name__ == '__main__':
  # Restart before the heavy imports, as main.py does.
  from cen_jax.training import host_memory  # pylint: disable=g-import-not-at-top
  host_memory.reexec_with_kept_memory()

import dataclasses
import sys
import time
from typing import Any, Callable, Sequence

from absl import app
from absl import flags
import jax
import ml_collections
from ml_collections import config_flags
import numpy as np

from benchmarks import common
from cen_jax import tasks
from cen_jax.tasks.translation import models
from cen_jax.tasks.translation import task as task_lib
from cen_jax.training import loop
from cen_jax.training import parallel
from cen_jax.training import state as state_lib
from data import taskonomy

# allow_override: the tests import this script beside the other benchmarks,
# which define flags of the same names; only the script run parses them.
_CONFIG = config_flags.DEFINE_config_file(
    'config', 'configs/taskonomy_cen.py', 'Config file (configs/*.py).',
    lock_config=True, allow_override=True)
_BATCH = flags.DEFINE_integer(
    'batch_size', None, "Global batch size; default: the config's.",
    allow_override=True)
_RESOLUTION = flags.DEFINE_list(
    'resolution', None, "H,W of the images, multiples of 2 ** num_downs; "
    "default: the config's crop.", allow_override=True)
_NUM_INPUTS = flags.DEFINE_integer(
    'num_inputs', None, "M; default: the config's inputs (more are taken "
    'from the other Taskonomy domains).', allow_override=True)
_NGF = flags.DEFINE_integer(
    'ngf', None, "Generator base width; default: the config's.",
    allow_override=True)
_DTYPE = flags.DEFINE_enum(
    'dtype', None, list(task_lib.DTYPES),
    "Compute dtype; default: the config's.", allow_override=True)
_STEPS = flags.DEFINE_integer('steps', 20, 'Timed steps.',
                              allow_override=True)
_WARMUP = flags.DEFINE_integer('warmup', 3, 'Untimed steps before timing.',
                               allow_override=True)
_EVAL = flags.DEFINE_bool('eval', True, 'Also time the eval step.',
                          allow_override=True)
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the weights and the batch.',
                             allow_override=True)

# The step needs a run length (the exchange rules see the progress); it
# changes no shape and no speed.
_NOMINAL_STEPS_PER_EPOCH = 100
TRAIN, EVAL = 'train step', 'eval step'


@dataclasses.dataclass(frozen=True)
class Timing:
  """How many untimed (``warmup``) and timed (``steps``) calls to make."""
  warmup: int
  steps: int


def bench_config(base: ml_collections.ConfigDict, *,
                 batch_size: int | None = None, ngf: int | None = None,
                 num_inputs: int | None = None, dtype: str | None = None
                 ) -> ml_collections.ConfigDict:
  """``base`` with the given batch, generator width, M and dtype."""
  c = base.copy_and_resolve_references()
  if batch_size is not None:
    c.optim.batch_size = batch_size
  if ngf is not None:
    c.model.ngf = ngf
  if num_inputs is not None:
    c.data.inputs = input_domains(c.data.inputs, c.data.target, num_inputs)
  if dtype is not None:
    c.model.dtype = dtype
  return c


def input_domains(inputs: Sequence[str], target: str,
                  num: int) -> tuple[str, ...]:
  """``num`` input domains: ``inputs`` first, then other Taskonomy ones.

  Only the count matters (no data is read); the names keep the task's
  domain check happy.

  Raises:
    app.UsageError: fewer than 1 or more domains than Taskonomy has
      besides ``target``.
  """
  pool = list(inputs) + [d for d in taskonomy.DOMAINS
                         if d not in inputs and d != target]
  if not 1 <= num <= len(pool):
    raise app.UsageError(f'--num_inputs={num}: give 1 to {len(pool)} (the '
                         f'Taskonomy domains other than {target!r})')
  return tuple(pool[:num])


def resolution(config: ml_collections.ConfigDict,
               value: Sequence[str] | None) -> tuple[int, int]:
  """``(H, W)`` from ``--resolution`` (default: the config's crop).

  Raises:
    app.UsageError: not ``H,W``, or a side that is not a multiple of
      ``2 ** config.model.num_downs`` (the U-Net halves it that often).
  """
  if value is None:
    h = w = int(config.data.crop_size)
  elif len(value) != 2:
    raise app.UsageError(f'--resolution takes H,W: {value}')
  else:
    h, w = (int(v) for v in value)
  side = 2 ** config.model.num_downs
  if h % side or w % side:
    raise app.UsageError(
        f'resolution {h}x{w}: with num_downs = {config.model.num_downs} '
        f'both sides must be multiples of {side}')
  return h, w


def random_batch(config: ml_collections.ConfigDict, size: tuple[int, int],
                 mesh: jax.sharding.Mesh, seed: int) -> dict[str, jax.Array]:
  """A batch of the input-pipeline contract, sharded as in training.

  ``'index'`` (read by the eval step only) is unique over processes.
  """
  rng = np.random.default_rng([seed, jax.process_index()])
  b = parallel.local_batch_size(config.optim.batch_size)
  m, (h, w) = len(config.data.inputs), size
  local = {
      'inputs': rng.uniform(-1, 1, (b, m, h, w, 3)).astype(np.float32),
      'target': rng.uniform(-1, 1, (b, h, w, 3)).astype(np.float32),
      'valid': np.ones((b,), bool),
      'index': (jax.process_index() * b + np.arange(b)).astype(np.int32),
  }
  return parallel.global_batch(local, mesh)


def time_compiled(call: Callable[[], Any], timing: Timing) -> np.ndarray:
  """Seconds of each of the timed calls, after the untimed ones."""
  for _ in range(timing.warmup):
    jax.block_until_ready(call())
  times = []
  for _ in range(timing.steps):
    start = time.perf_counter()
    jax.block_until_ready(call())
    times.append(time.perf_counter() - start)
  return np.asarray(times)


def measure(jitted, args: tuple[Any, ...], *, donates_state: bool,
            batch_size: int, timing: Timing) -> dict[str, Any]:
  """Compiles ``jitted`` for ``args`` and times it; a column of the table."""
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

  times = time_compiled(call, timing)
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


def benchmark(config: ml_collections.ConfigDict, size: tuple[int, int], *,
              timing: Timing, seed: int, with_eval: bool = True
              ) -> tuple[Any, dict[str, dict[str, Any]]]:
  """Builds the task and times its steps on one random batch.

  Returns:
    ``(task, rows)``: the translation task and ``{'train step': row,
    'eval step': row}`` (the eval row with ``with_eval``), rows as
    :func:`measure` returns them; the train row's ``'state'`` is the state
    after the timed steps.
  """
  mesh = parallel.make_mesh()
  parallel.check_divisible(config.optim.batch_size, mesh, 'batch size')
  task = tasks.build(config, workdir='/nonexistent')  # Reads no data.
  trainer = task.trainer_for(_NOMINAL_STEPS_PER_EPOCH)
  init_rng, dropout_rng = jax.random.split(jax.random.key(seed))
  state = loop.create_state(trainer, mesh,
                            jax.jit(task.init_variables)(init_rng))
  batch = random_batch(config, size, mesh, seed)
  batch_size = config.optim.batch_size
  rows = {TRAIN: measure(
      loop.jit_train_step(trainer, mesh), (state, batch, dropout_rng),
      donates_state=True, batch_size=batch_size, timing=timing)}
  if with_eval:
    variables = state_lib.subtree(rows[TRAIN]['state'],
                                  loop.abstract_variables(task))
    rows[EVAL] = measure(
        loop.jit_eval_step(task, mesh), (variables, batch),
        donates_state=False, batch_size=batch_size, timing=timing)
  return task, rows


def header(config: ml_collections.ConfigDict, size: tuple[int, int],
           variables: Any, timing: Timing, argv: Sequence[str]) -> str:
  """The command, the machine, the networks and the batch."""
  m, d = config.model, config.data
  kwargs = dict(m.exchange_kwargs or {})
  exchange = m.exchange + (f' {kwargs}' if kwargs else '')
  return '\n'.join(common.run_header('benchmarks.translation_step', argv) + [
      f'backend {jax.default_backend()}; generator: ngf {m.ngf}, num_downs '
      f'{m.num_downs}, exchange {exchange}, dtype {m.dtype}, '
      f'{models.parameter_count(variables["generator"]["params"]):,} '
      'parameters; discriminator: ndf '
      f'{m.ndf}, n_layers {m.n_layers}, '
      f'{models.parameter_count(variables["discriminator"]["params"]):,} '
      'parameters',
      f'batch {config.optim.batch_size} x M {len(d.inputs)} '
      f'({", ".join(d.inputs)} -> {d.target}) x {size[0]}x{size[1]}; eval '
      f'protocol {config.eval.protocol}; {timing.warmup} warm-up + '
      f'{timing.steps} timed steps',
  ])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  config = bench_config(_CONFIG.value, batch_size=_BATCH.value,
                        ngf=_NGF.value, num_inputs=_NUM_INPUTS.value,
                        dtype=_DTYPE.value)
  if config.task != 'translation':
    raise app.UsageError(f'--config is a {config.task!r} config; this '
                         'benchmark times translation (benchmarks/'
                         'train_step.py times segmentation)')
  size = resolution(config, _RESOLUTION.value)
  timing = Timing(warmup=_WARMUP.value, steps=_STEPS.value)
  _, rows = benchmark(config, size, timing=timing, seed=_SEED.value,
                      with_eval=_EVAL.value)
  top = header(config, size, rows[TRAIN]['state'], timing, sys.argv)
  print('\n'.join(['', top, '', common.table(rows), '']))


if __name__ == '__main__':
  app.run(main)
