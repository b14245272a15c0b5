r"""Our train step against the official PyTorch one, side by side in one run.

  python -m benchmarks.vs_official --official=PATH

PATH is a checkout of the official code (https://github.com/yikaiw/CEN); its
``semantic_segmentation/models`` is imported from there (nothing of it lives
in this repository) and needs only torch: its ``utils.helpers``, which wants
OpenCV and matplotlib for the official data loading, is replaced by a stand-in
whose only name, ``maybe_download``, building a model never calls.

Both sides run the official recipe's training step at the same setting
(default: ResNet-101, batch 2, the config's modalities (2), 240x320, 40
classes, frozen BN, exchange at threshold 2e-2, random inputs and labels with
5% void). The official step is the loop body of ``train()`` in the official
``main.py``: forward, per output a bilinear upsampling to the label size,
``LogSoftmax`` + ``NLLLoss(ignore_index=255)`` plus ``lamda`` times the L1 norm
of the bn2 scale halves, ``zero_grad``, ``backward`` and the encoder and decoder
SGD steps (stage-1 learning rates, momentum 0.9, weight decay 1e-5), with the
BN modules in eval mode (``FREEZE_BN``). Ours is the jitted, donating
``loop.jit_train_step`` that ``main.py`` trains with (as in
``benchmarks/train_step.py``). The official side runs in a process of its own (as it does for real, and
so that the two runtimes' thread pools and allocators do not interfere),
fed the same batch. They alternate: ``--rounds`` rounds of
``--steps`` official steps then ``--steps`` of ours, after ``--warmup`` untimed
steps each, so drift on a noisy machine hits both alike; ``--eval`` also times
the forward passes, like for like: the official ``model.eval()`` under
``no_grad``, ours the jitted ``model.apply(..., train=False)`` with the
task's compiler options (all outputs at 1/4 resolution, as the official
model returns them), and, for information, our whole eval step (the forward,
the official protocol's bicubic upsampling of every output to the label
size, argmax and confusion matrices), which has no official counterpart
timed here.

Printed: the command and versions, both medians (and p90), ours' per-op
category breakdown from the profiler (``benchmarks/op_breakdown.py``; the
step compiled with its ``traceable_options``) and,
last, ``ratio ours/official: X`` (median over median of the train step).
Any config override applies to ours, e.g. ``--config.model.kernels=xla``.
"""

if __name__ == '__main__':
  # Restart before the heavy imports, as main.py does.
  from cen_jax.training import host_memory  # pylint: disable=g-import-not-at-top
  host_memory.reexec_with_kept_memory()

import functools
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import types
from typing import Any, Callable

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from benchmarks import op_breakdown
from benchmarks import train_step
from cen_jax.training import host_memory
from cen_jax.training import loop
from cen_jax.training import state as state_lib

_OFFICIAL = flags.DEFINE_string(
    'official', None, 'Path of a checkout of the official CEN repository.')
_ROUNDS = flags.DEFINE_integer('rounds', 3, 'Alternating rounds.')
_NUM_THREADS = flags.DEFINE_integer(
    'torch_threads', None, "torch.set_num_threads; default: torch's (cores).")
_BREAKDOWN = flags.DEFINE_bool(
    'breakdown', True, "Profile one of our steps by op category.")
_WORKER = flags.DEFINE_string(
    'official_worker', None, 'Internal: run the official side in this '
    'process, on the batch in this .npz, taking commands on stdin.')

# The official recipe (config.py of its semantic_segmentation).
_LR_ENC, _LR_DEC, _MOMENTUM, _WEIGHT_DECAY = 5e-4, 3e-3, 0.9, 1e-5
_LAMDA, _BN_THRESHOLD, _IGNORE = 2e-4, 2e-2, 255
_DEFAULTS = {'depth': '101', 'batch_size': 2, 'resolution': ['240', '320'],
             'steps': 3, 'warmup': 1}
_DEFAULT_CONFIG = 'configs/nyud_cen.py'


def official_root(path: str) -> str:
  """``<path>/semantic_segmentation``, checked to hold the official model."""
  root = os.path.join(os.path.expanduser(path), 'semantic_segmentation')
  model_py = os.path.join(root, 'models', 'model.py')
  if not os.path.isfile(model_py):
    raise app.UsageError(
        f'--official={path}: no {model_py}; give the root of a checkout of '
        'https://github.com/yikaiw/CEN')
  return root


def import_official(path: str) -> Any:
  """The official ``semantic_segmentation/models/model.py`` module."""
  root = official_root(path)
  # Its utils package imports OpenCV/matplotlib for data loading; the model
  # file needs only maybe_download (for ImageNet weights, not used here).
  helpers = types.ModuleType('utils.helpers')

  def maybe_download(*args, **kwargs):
    raise RuntimeError('vs_official never downloads weights')

  helpers.maybe_download = maybe_download
  utils = types.ModuleType('utils')
  utils.__path__ = []
  utils.helpers = helpers
  sys.modules.setdefault('utils', utils)
  sys.modules.setdefault('utils.helpers', helpers)
  sys.path.insert(0, root)
  try:
    import models.model as official  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  finally:
    sys.path.remove(root)
  return official


class OfficialStep:
  """The official training step (``train()``'s loop body) on fixed tensors."""

  def __init__(self, official: Any, depth: int, num_classes: int,
               inputs: np.ndarray, label: np.ndarray):
    import torch  # pylint: disable=g-import-not-at-top,import-outside-toplevel
    self.torch = torch
    torch.manual_seed(0)
    num_parallel = inputs.shape[1]
    self.model = official.refinenet(depth, num_classes, num_parallel,
                                    _BN_THRESHOLD)
    enc, dec, self.slim = [], [], []
    for name, param in self.model.named_parameters():
      (enc if re.match('.*conv1.*|.*bn1.*|.*layer.*', name) else
       dec).append(param)
      if param.requires_grad and name.endswith('weight') and 'bn2' in name:
        half = len(param) // 2
        self.slim.append(param[:half] if len(self.slim) % 2 == 0 else
                         param[half:])
    self.optims = [
        torch.optim.SGD(enc, lr=_LR_ENC, momentum=_MOMENTUM,
                        weight_decay=_WEIGHT_DECAY),
        torch.optim.SGD(dec, lr=_LR_DEC, momentum=_MOMENTUM,
                        weight_decay=_WEIGHT_DECAY)]
    # (B, M, H, W, 3) -> M tensors (B, 3, H, W).
    self.inputs = [torch.from_numpy(np.ascontiguousarray(
        inputs[:, m].transpose(0, 3, 1, 2))) for m in range(num_parallel)]
    self.target = torch.from_numpy(label.astype(np.int64))
    self.criterion = torch.nn.NLLLoss(ignore_index=_IGNORE)

  def train_step(self) -> float:
    torch, nn = self.torch, self.torch.nn
    self.model.train()
    for module in self.model.modules():  # FREEZE_BN.
      if isinstance(module, nn.BatchNorm2d):
        module.eval()
    outputs, _ = self.model(self.inputs)
    loss = 0
    for output in outputs:
      output = nn.functional.interpolate(
          output, size=self.target.shape[1:], mode='bilinear',
          align_corners=False)
      loss += self.criterion(torch.log_softmax(output, dim=1), self.target)
      loss += _LAMDA * sum(torch.abs(p).sum() for p in self.slim)
    for optim in self.optims:
      optim.zero_grad()
    loss.backward()
    for optim in self.optims:
      optim.step()
    return float(loss)

  def eval_forward(self) -> Any:
    self.model.eval()
    with self.torch.no_grad():
      return self.model(self.inputs)


def _seconds(call: Callable[[], Any], count: int) -> list[float]:
  times = []
  for _ in range(count):
    start = time.perf_counter()
    call()
    times.append(time.perf_counter() - start)
  return times


def _worker(batch_file: str) -> None:
  """The official side's process: 'train N' / 'eval N' -> one TIMES line."""
  official = import_official(_OFFICIAL.value)
  import torch  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  if _NUM_THREADS.value:
    torch.set_num_threads(_NUM_THREADS.value)
  data = np.load(batch_file)
  step = OfficialStep(official, int(data['depth']), int(data['num_classes']),
                      data['inputs'], data['label'])
  calls = {'train': step.train_step, 'eval': step.eval_forward}
  print('READY', torch.__version__, torch.get_num_threads(), flush=True)
  for line in sys.stdin:
    what, count = line.split()
    print('TIMES', json.dumps(_seconds(calls[what], int(count))), flush=True)


class OfficialProcess:
  """The official step in its own process, as it runs for real.

  A process of its own keeps torch's and XLA's thread pools and allocators
  from interfering (measured: ours ran ~15% slower in the same process
  right after torch steps).
  """

  def __init__(self, batch_file: str):
    cmd = [sys.executable, '-m', 'benchmarks.vs_official',
           f'--official={_OFFICIAL.value}', f'--official_worker={batch_file}']
    if _NUM_THREADS.value:
      cmd.append(f'--torch_threads={_NUM_THREADS.value}')
    self._proc = subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ready = self._read('READY')
    self.torch_version, self.threads = ready[0], int(ready[1])

  def _read(self, tag: str) -> list[str]:
    for line in self._proc.stdout:
      if line.startswith(tag + ' '):
        return line.split(' ', 1)[1].split() if tag == 'READY' else [
            line.split(' ', 1)[1]]
    raise RuntimeError(f'the official worker exited ({self._proc.wait()}); '
                       'its error is above')

  def run(self, what: str, count: int) -> list[float]:
    self._proc.stdin.write(f'{what} {count}\n')
    self._proc.stdin.flush()
    return json.loads(self._read('TIMES')[0])

  def close(self) -> None:
    self._proc.stdin.close()
    self._proc.wait()


def _stats(times: list[float]) -> str:
  return (f'{np.median(times):9.2f} s median, {np.percentile(times, 90):6.2f}'
          f' s p90, {len(times)} steps')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if not _OFFICIAL.value:
    raise app.UsageError('--official=PATH (a checkout of yikaiw/CEN) is '
                         'required')
  if _WORKER.value:
    return _worker(_WORKER.value)
  official_root(_OFFICIAL.value)  # Fails early on a wrong path.

  config = train_step.bench_config(train_step._CONFIG.value)  # pylint: disable=protected-access
  size = train_step.resolution(config)
  task, trainer, mesh = train_step.make_task(config)
  init_rng, dropout_rng = jax.random.split(jax.random.key(0))
  state = loop.create_state(trainer, mesh,
                            jax.jit(task.init_variables)(init_rng))
  batch = train_step.random_batch(config, size, mesh, 0)
  host = jax.device_get(batch)
  depth = int(config.model.depth)
  tmp = tempfile.TemporaryDirectory()
  batch_file = os.path.join(tmp.name, 'batch.npz')
  np.savez(batch_file, inputs=np.asarray(host['inputs']),
           label=np.asarray(host['label']), depth=depth,
           num_classes=config.model.num_classes)
  theirs = OfficialProcess(batch_file)

  start = time.perf_counter()
  compiled = loop.jit_train_step(trainer, mesh).lower(
      state, batch, dropout_rng).compile()
  compile_s = time.perf_counter() - start
  holder = [state]

  def ours_step():
    holder[0], *rest = compiled(holder[0], batch, dropout_rng)
    jax.block_until_ready((holder[0], rest))

  eval_calls = None
  if train_step._EVAL.value:  # pylint: disable=protected-access
    shapes = loop.abstract_variables(task)
    eval_compiled = loop.jit_eval_step(task, mesh).lower(
        state_lib.subtree(state, shapes), batch).compile()
    # (B, M, H, W, 3) -> (M, B, H, W, 3), the model's input.
    x = jax.jit(lambda a: jnp.moveaxis(a, 1, 0))(batch['inputs'])
    forward_compiled = jax.jit(
        functools.partial(task.model.apply, train=False),
        compiler_options=task.compiler_options).lower(
            state_lib.subtree(state, shapes), x).compile()

    def ours_forward():
      variables = state_lib.subtree(holder[0], shapes)
      jax.block_until_ready(forward_compiled(variables, x))

    def ours_eval_step():
      variables = state_lib.subtree(holder[0], shapes)
      jax.block_until_ready(eval_compiled(variables, batch))

    eval_calls = ours_forward, ours_eval_step

  warmup, num_steps = train_step._WARMUP.value, train_step._STEPS.value  # pylint: disable=protected-access
  theirs.run('train', warmup)
  _seconds(ours_step, warmup)
  labels = {'official': 'official train step', 'ours': 'ours train step',
            'official eval': 'official eval forward',
            'ours eval': 'ours eval forward',
            'ours eval step': 'ours eval step'}
  times = {name: [] for name in labels}
  if eval_calls:
    theirs.run('eval', 1)
    _seconds(eval_calls[0], 1)
    _seconds(eval_calls[1], 1)
  for _ in range(_ROUNDS.value):
    times['official'] += theirs.run('train', num_steps)
    times['ours'] += _seconds(ours_step, num_steps)
    if eval_calls:
      times['official eval'] += theirs.run('eval', num_steps)
      times['ours eval'] += _seconds(eval_calls[0], num_steps)
      times['ours eval step'] += _seconds(eval_calls[1], num_steps)
  theirs.close()
  tmp.cleanup()

  lines = common.run_header('benchmarks.vs_official', sys.argv)
  lines += [
      'host malloc: ' + (', '.join(
          f'{k}={os.environ[k]}' for k in host_memory.SETTINGS
          if k in os.environ) or 'glibc defaults') + ' (both sides)',
      f'official: torch {theirs.torch_version} ({theirs.threads} threads), '
      'in its own process; code: '
      f'{os.path.abspath(os.path.expanduser(_OFFICIAL.value))}',
      f'ResNet-{depth}, batch {config.optim.batch_size} x M '
      f'{len(config.data.modalities)} x {size[0]}x{size[1]}, '
      f'{config.model.num_classes} classes; ours: kernels '
      f'{config.model.kernels}, dtype {config.model.dtype}, compile '
      f'{compile_s:.1f} s; {warmup} warm-up + {_ROUNDS.value} rounds x '
      f'{num_steps} steps each, alternating',
      '']
  for name, values in times.items():
    if values:
      lines.append(f'{labels[name]:<24}{_stats(values)}')
  if eval_calls:
    lines.append(f'ratio ours/official, eval forward: '
                 f'{np.median(times["ours eval"]) / np.median(times["official eval"]):.2f}')
  if _BREAKDOWN.value:
    # The same step, compiled so that the profiler sees every convolution.
    traced = loop.jit_train_step(trainer, mesh).lower(
        holder[0], batch, dropout_rng).compile(
            compiler_options=op_breakdown.traceable_options())

    def traced_step():
      holder[0], *rest = traced(holder[0], batch, dropout_rng)
      return jax.block_until_ready((holder[0], rest))

    traced_step()  # Warm-up.
    totals, _ = op_breakdown.breakdown(traced, traced_step)
    lines += ['', 'ours, one train step by op category (profiler; '
              'convolutions on YNNPACK, which it can time):',
              op_breakdown.table(totals)]
  ratio = np.median(times['ours']) / np.median(times['official'])
  lines += ['', f'ratio ours/official: {ratio:.2f}']
  print('\n'.join(lines))


def _with_default_config(argv: list[str]) -> list[str]:
  """``argv`` with ``--config=configs/nyud_cen.py`` unless one is given."""
  if any(a == '--config' or a.startswith('--config=') for a in argv[1:]):
    return argv
  return [argv[0], f'--config={_DEFAULT_CONFIG}'] + argv[1:]


if __name__ == '__main__':
  for _name, _value in _DEFAULTS.items():
    flags.FLAGS.set_default(_name, _value)
  sys.argv = _with_default_config(sys.argv)
  app.run(main)
