r"""The train step on a GPU or TPU at the official size: speed, MFU, memory.

  python -m benchmarks.accelerator

Runs ``benchmarks/train_step.py`` once per row, each in its own process (so
every row's peak memory is its own), at the official setting: ResNet-101,
batch 6, 2 modalities, 500x500, 40 classes, the ``configs/nyud_cen.py``
recipe. Rows: float32 and bfloat16 compute, each without and with
``config.model.remat_encoder``. Then, for each dtype with remat (the
configuration that fits most), the largest global batch that still runs a
step: doubling from 6 until one fails with out-of-memory, then bisecting.

Printed per row: images/s, step median, XLA's FLOPs per step, model FLOP
utilisation (MFU: achieved FLOP/s over the device's peak dense FLOP/s for
the dtype: bf16 peak for bfloat16, the TF32 tensor-core peak for float32 on
GPUs (XLA's default precision lets convolutions use TF32), bf16 peak on TPUs
(default precision runs float32 matmuls as bf16 passes)), and the device's
``peak_bytes_in_use``. ``--peak_tflops`` overrides the peak; devices not in
the table get no MFU. ``--skip_batch_search`` drops the largest-batch part
(several more compiles).

Run on the accelerator machine; on a CPU it runs too (slowly; no device
peak memory, no MFU).
"""

import json
import os
import subprocess
import sys
import tempfile
from typing import Any

from absl import app
from absl import flags
import jax

from benchmarks import common

_BATCH = flags.DEFINE_integer('batch_size', 6, 'Global batch of the rows.')
_RESOLUTION = flags.DEFINE_string('resolution', '500,500', 'H,W.')
_DEPTH = flags.DEFINE_string('depth', '101', 'ResNet depth.')
_STEPS = flags.DEFINE_integer('steps', 10, 'Timed steps per row.')
_WARMUP = flags.DEFINE_integer('warmup', 2, 'Untimed steps per row.')
_DTYPES = flags.DEFINE_list('dtypes', ['float32', 'bfloat16'], 'Dtypes.')
_PEAK = flags.DEFINE_float(
    'peak_tflops', None, 'Peak dense TFLOP/s of one device (overrides the '
    'table) for MFU.')
_SKIP_SEARCH = flags.DEFINE_bool(
    'skip_batch_search', False, 'Do not search the largest batch.')
_MAX_BATCH = flags.DEFINE_integer(
    'max_batch', 256, 'Stop the largest-batch search here.')

# Peak dense TFLOP/s per device: (float32 as XLA runs it, bfloat16).
_PEAKS = (
    ('H200', (494.0, 989.0)), ('H100', (494.0, 989.0)),
    ('A100', (156.0, 312.0)), ('L4', (60.0, 121.0)),
    ('TPU v6', (918.0, 918.0)), ('TPU v5p', (459.0, 459.0)),
    ('TPU v5', (197.0, 197.0)), ('TPU v4', (275.0, 275.0)),
)


def peak_flops(device_kind: str, dtype: str) -> float | None:
  if _PEAK.value:
    return _PEAK.value * 1e12
  for name, (f32, bf16) in _PEAKS:
    if name.lower() in device_kind.lower():
      return (bf16 if dtype == 'bfloat16' else f32) * 1e12
  return None


def run_row(batch: int, dtype: str, remat: bool, steps: int,
            warmup: int) -> dict[str, Any] | None:
  """One train_step process; its train row, or None if it ran out of memory.

  Any other failure raises with the child's output.
  """
  with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, 'row.json')
    cmd = [sys.executable, '-m', 'benchmarks.train_step',
           '--config=configs/nyud_cen.py', f'--depth={_DEPTH.value}',
           f'--batch_size={batch}', f'--resolution={_RESOLUTION.value}',
           f'--dtype={dtype}', f'--config.model.remat_encoder={remat}',
           f'--steps={steps}', f'--warmup={warmup}', f'--json_out={out}']
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
      text = proc.stdout + proc.stderr
      if 'RESOURCE_EXHAUSTED' in text or 'out of memory' in text.lower():
        return None
      raise RuntimeError(f'{" ".join(cmd)} failed:\n{text[-4000:]}')
    with open(out) as f:
      return json.load(f)['train step']


def largest_batch(dtype: str, remat: bool) -> tuple[int, int | None]:
  """(largest batch that ran, smallest that did not) for dtype/remat."""
  good, bad = 0, None
  batch = _BATCH.value
  while bad is None and batch <= _MAX_BATCH.value:
    if run_row(batch, dtype, remat, steps=1, warmup=1) is None:
      bad = batch
    else:
      good, batch = batch, batch * 2
  if bad is None:
    return good, None
  while bad - good > max(1, good // 8):  # To within 1/8 of the answer.
    mid = (good + bad) // 2
    if run_row(mid, dtype, remat, steps=1, warmup=1) is None:
      bad = mid
    else:
      good = mid
  return good, bad


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  kind = jax.devices()[0].device_kind
  lines = common.run_header('benchmarks.accelerator', sys.argv) + [
      f'ResNet-{_DEPTH.value}, batch {_BATCH.value} x M 2 x '
      f'{_RESOLUTION.value}, configs/nyud_cen.py; {_WARMUP.value} warm-up + '
      f'{_STEPS.value} timed steps per row, one process per row', '',
      f'{"dtype":<10}{"remat":<7}{"images/s":>10}{"step (ms)":>11}'
      f'{"FLOPs/step":>14}{"MFU":>8}{"peak memory":>14}']
  for dtype in _DTYPES.value:
    for remat in (False, True):
      row = run_row(_BATCH.value, dtype, remat, _STEPS.value, _WARMUP.value)
      if row is None:
        lines.append(f'{dtype:<10}{str(remat):<7}  out of memory')
        continue
      peak = peak_flops(kind, dtype)
      mfu = (f'{row["flops_per_s"] / peak:.1%}'
             if peak and row['flops_per_s'] else 'n/a')
      mem = (common.si(row['memory'], 'B')
             if row['memory_label'].startswith('device') else 'n/a')
      lines.append(
          f'{dtype:<10}{str(remat):<7}{row["images_per_s"]:>10.1f}'
          f'{row["median_s"] * 1e3:>11.1f}'
          f'{common.si(row["flops"], "FLOP"):>14}{mfu:>8}{mem:>14}')
      print(lines[-1], flush=True)
  if not _SKIP_SEARCH.value:
    lines.append('')
    for dtype in _DTYPES.value:
      good, bad = largest_batch(dtype, remat=True)
      lines.append(f'largest batch, {dtype}, remat: {good} runs'
                   + (f', {bad} runs out of memory' if bad else
                      f' (search stopped at --max_batch {_MAX_BATCH.value})'))
      print(lines[-1], flush=True)
  print('\n'.join(lines))


if __name__ == '__main__':
  app.run(main)
