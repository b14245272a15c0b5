"""Where a compiled step's time goes, by op category, from the JAX profiler.

``breakdown(compiled, args)`` runs ``compiled(*args)`` once under
``jax.profiler`` and attributes every executed XLA op (a fusion, a
convolution, a copy, ...) to a category by reading the optimised HLO: the
op's opcode and those of the instructions fused into it, and their
``op_name`` metadata (the JAX call stack: module path, ``jvp``/``transpose``
for forward/backward, and the named scopes ``cen_jax`` puts on its hot
paths: ``conv_input_grad``, ``conv_weight_grad``, ``max_pool``, ``exchange``,
``resize``, ``loss``).

Categories, first match wins:

* ``conv weight grad``: in a ``conv_weight_grad`` scope (the im2col-matmul
  formulation of ``cen_jax.core.kernels``), or an XLA convolution whose
  window has more taps than its output has positions (how XLA writes a
  kernel's gradient: the activation is the window);
* ``conv input grad``: in a ``conv_input_grad`` scope, or any other
  convolution under ``transpose(...)`` (the backward pass);
* ``conv forward``: any other convolution;
* ``pooling``, ``exchange``, ``resizes``, ``loss``: their scopes (pooling
  also by ``reduce-window``/``select-and-scatter``);
* ``batch norm``: a private BN module (``vmap(bn...)``);
* ``dropout``: the decoder's dropout (its random bits included);
* ``optimiser + step``: outside the model's forward and backward (no
  ``jvp(``): the optimiser update, the L1 term, metrics;
* ``other (ReLU, residual adds, copies)``: everything else.

A fused op counts once, in the first category any of its instructions
matches; its layout copies (``copy``/``transpose`` fusions) go with what they
feed. Times are the sum of per-op durations over all threads, so with
intra-op parallelism they can exceed the wall time; the shares are what to
read.

XLA:CPU runs an Eigen convolution asynchronously: the profiler records only
its launch, and its work lands in the executor's wait. Compile the profiled
program with :func:`traceable_options`, which hands convolutions (and dots)
to YNNPACK, XLA's default, whose calls the profiler times; the step that is
timed may use Eigen's (``cen_jax.core.kernels.compiler_options``).
"""

import collections
import glob
import os
import re
import tempfile
from typing import Any, Callable, Sequence

import jax
import numpy as np

from cen_jax.core import kernels

CATEGORIES = (
    'conv forward', 'conv input grad', 'conv weight grad', 'pooling',
    'exchange', 'resizes', 'loss', 'batch norm', 'dropout',
    'optimiser + step', 'other (ReLU, residual adds, copies)',
)

# XLA:CPU's library fusions by YNNPACK: convolutions and dots.
_YNN_CONVS_AND_DOTS = {
    kernels.YNN_FUSION_TYPE: 'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,'
                             'LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION'}


def traceable_options() -> dict[str, str] | None:
  """Compiler options under which the profiler times every convolution.

  For ``lowered.compile(compiler_options=...)``: on the CPU, convolutions
  and matmuls by YNNPACK (synchronous, traced); elsewhere None.
  """
  return dict(_YNN_CONVS_AND_DOTS) if jax.default_backend() == 'cpu' else None


def ynn_ops(hlo_text: str) -> list[str]:
  """Which of convolution and dot run in YNNPACK fusions of a module.

  ``hlo_text``: a compiled executable's ``as_text()``. Sorted, distinct.
  """
  called = set(re.findall(r'ynn_fusion[\w.]* = .*calls=(%[\w.]+)', hlo_text))
  ops = set()
  for block in hlo_text.split('\n\n'):
    if block.lstrip().split(' ', 1)[0] in called:
      ops.update(re.findall(r'= \S+ (convolution|dot)\(', block))
  return sorted(ops)


_COMPUTATION = re.compile(r'^%?([\w.\-]+) .*\{\s*$')
_INSTRUCTION = re.compile(
    r'^\s*(?:ROOT )?%?([\w.\-]+) = (?:\([^=]*?\)|[\w\[\],{}:\s/*.=]*?) '
    r'([a-z][a-z\-]*)\(')
_CALLS = re.compile(r'(?:calls|to_apply|body|condition)=%?([\w.\-]+)')
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_DIM_LABELS = re.compile(r'dim_labels=[0-9a-z]+_[0-9a-z]+->([0-9a-z]+)')
_SHAPE = re.compile(r' = [a-z0-9]+\[([0-9,]*)\]')
_WINDOW = re.compile(r'window=\{size=([0-9x]+)')


class _Instruction:

  def __init__(self, opcode: str, line: str):
    self.opcode = opcode
    self.op_name = (_OP_NAME.search(line) or [None, ''])[1]
    self.calls = _CALLS.findall(line)
    self.weight_grad = False
    if opcode == 'convolution':
      # XLA writes a weight gradient as a convolution whose window is the
      # activation and whose output is the (small) kernel: the window holds
      # more taps than the output has spatial positions.
      labels, shape = _DIM_LABELS.search(line), _SHAPE.search(line)
      window = _WINDOW.search(line)
      if labels and shape and window:
        dims = [int(d) for d in shape[1].split(',') if d]
        spatial = [dims[labels[1].index(a)] for a in '01'
                   if a in labels[1] and labels[1].index(a) < len(dims)]
        taps = [int(t) for t in window[1].split('x')]
        self.weight_grad = (len(spatial) == len(taps)
                            and np.prod(taps) > np.prod(spatial))


def parse_hlo(text: str) -> tuple[dict[str, list[_Instruction]],
                                  dict[str, _Instruction]]:
  """``(computations, instructions)`` of an optimised HLO module's text."""
  computations: dict[str, list[_Instruction]] = {}
  instructions: dict[str, _Instruction] = {}
  current = None
  for line in text.splitlines():
    if not line.startswith(' ') and line.rstrip().endswith('{'):
      match = _COMPUTATION.match(line.replace('ENTRY ', ''))
      current = match[1] if match else None
      if current is not None:
        computations[current] = []
      continue
    match = _INSTRUCTION.match(line)
    if match and current is not None:
      inst = _Instruction(match[2], line)
      computations[current].append(inst)
      instructions[match[1]] = inst
  return computations, instructions


def _contents(name: str, computations, instructions) -> list[_Instruction]:
  """The instruction ``name`` and everything in the computations it calls."""
  top = instructions.get(name)
  if top is None:
    return []
  out, todo, seen = [top], list(top.calls), set()
  while todo:
    comp = todo.pop()
    if comp in seen or comp not in computations:
      continue
    seen.add(comp)
    for inst in computations[comp]:
      out.append(inst)
      todo.extend(inst.calls)
  return out


def categorize(contents: Sequence[_Instruction]) -> str:
  """The category of one executed op (see the module docstring)."""
  names = [i.op_name for i in contents if i.op_name]
  has = lambda s: any(s in n for n in names)  # pylint: disable=unnecessary-lambda-assignment
  convs = [i for i in contents if i.opcode == 'convolution']
  if has('conv_weight_grad') or any(i.weight_grad for i in convs):
    return 'conv weight grad'
  if has('conv_input_grad') or any('transpose(' in i.op_name for i in convs):
    return 'conv input grad'
  if convs:
    return 'conv forward'
  if has('max_pool') or any(i.opcode in ('reduce-window', 'select-and-scatter')
                            for i in contents):
    return 'pooling'
  for scope, category in (('/exchange', 'exchange'), ('/resize', 'resizes'),
                          ('/loss', 'loss')):
    if has(scope):
      return category
  if has('vmap(bn') or has('vmap(downsample_bn'):
    return 'batch norm'
  if has('Dropout'):
    return 'dropout'
  if names and not any('jvp(' in n for n in names):
    return 'optimiser + step'
  return 'other (ReLU, residual adds, copies)'


def _op_seconds(logdir: str) -> collections.Counter:
  """Seconds per XLA op name summed over the trace's non-Python threads."""
  # TensorFlow (a dependency of tensorflow-datasets) carries the proto.
  from tensorflow.tsl.profiler.protobuf import xplane_pb2  # pylint: disable=g-import-not-at-top
  path = sorted(glob.glob(os.path.join(logdir, '**', '*.xplane.pb'),
                          recursive=True))[-1]
  space = xplane_pb2.XSpace()
  with open(path, 'rb') as f:
    space.ParseFromString(f.read())
  seconds = collections.Counter()
  for plane in space.planes:
    meta = plane.event_metadata
    for line in plane.lines:
      if line.name == 'python':
        continue
      for event in line.events:
        seconds[meta[event.metadata_id].name] += event.duration_ps * 1e-12
  return seconds


def breakdown(compiled: Any, call: Callable[[], Any]
              ) -> tuple[dict[str, float], Any]:
  """``(op-seconds per category, outputs)`` of one ``call()``.

  ``compiled`` is the compiled executable ``call`` runs (its optimised HLO
  names the ops); ``call`` returns its outputs, handed back so a step that
  donates its state can go on with the new one.
  """
  computations, instructions = parse_hlo(compiled.as_text())
  with tempfile.TemporaryDirectory() as logdir:
    jax.profiler.start_trace(logdir)
    outputs = jax.block_until_ready(call())
    jax.profiler.stop_trace()
    seconds = _op_seconds(logdir)
  totals = dict.fromkeys(CATEGORIES, 0.0)
  for name, secs in seconds.items():
    if name in instructions:
      totals[categorize(_contents(name, computations, instructions))] += secs
  return totals, outputs


def table(totals: dict[str, float]) -> str:
  """One line per category: op-seconds and share of the attributed time."""
  total = sum(totals.values()) or 1.0
  lines = [f'{"op category":<40}{"op-seconds":>12}{"share":>8}']
  for category, secs in sorted(totals.items(), key=lambda kv: -kv[1]):
    lines.append(f'{category:<40}{secs:>12.3f}{secs / total:>8.1%}')
  lines.append(f'{"total attributed":<40}{total:>12.3f}')
  return '\n'.join(lines)
