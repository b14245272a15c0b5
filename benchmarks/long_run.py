r"""A long run under load: does memory stay flat and the workdir bounded?

  python -m benchmarks.long_run --steps=3000

Trains the tiny model on CPU for ``--steps`` steps with frequent evaluation
and checkpoints (defaults: every 100 and every 50 steps, the rolling
checkpoints kept to ``--keep``), and samples, every ``--sample_seconds``,
the process's resident memory (RSS), the size of ``<workdir>/checkpoints``
and the newest checkpoint's step. It prints the samples, then the RSS
growth from the first sample after the warm-up (a quarter of the run) to
the end and the largest checkpoint directory seen; with a bounded keep
policy the directory stays at about ``keep + 1`` checkpoints (rolling +
best). A script rather than a test, so that the suite stays fast.
"""

import pathlib
import sys
import tempfile
import threading
import time

from absl import app
from absl import flags
from ml_collections import config_flags

from benchmarks import common
from cen_jax import run

_CONFIG = config_flags.DEFINE_config_file(
    'config', 'configs/quickstart.py', 'Base config.', lock_config=True)
_STEPS = flags.DEFINE_integer('steps', 3000, 'Training steps.')
_EVAL_EVERY = flags.DEFINE_integer('eval_every_steps', 100, 'Eval period.')
_CKPT_EVERY = flags.DEFINE_integer('checkpoint_every_steps', 50,
                                   'Checkpoint period.')
_KEEP = flags.DEFINE_integer('keep', 2, 'Rolling checkpoints kept.')
_SAMPLE = flags.DEFINE_float('sample_seconds', 10.0, 'Sampling period.')
_WORKDIR = flags.DEFINE_string('workdir', None,
                               'Run directory (default: a temporary one).')
_TINY = flags.DEFINE_bool(
    'tiny', True, 'Use synthetic_rgbd/tiny (32x32) and a width-8 model.')


def rss_bytes() -> int:
  """Resident memory of this process now (Linux /proc)."""
  for line in pathlib.Path('/proc/self/status').read_text().splitlines():
    if line.startswith('VmRSS:'):
      return int(line.split()[1]) * 1024
  raise RuntimeError('no VmRSS in /proc/self/status')


def tree_bytes(root: pathlib.Path) -> int:
  if not root.exists():
    return 0
  return sum(p.stat().st_size for p in root.rglob('*') if p.is_file())


def newest_step(root: pathlib.Path) -> int:
  latest = root / 'latest'
  steps = [int(p.name) for p in latest.iterdir() if p.name.isdigit()] \
      if latest.exists() else []
  return max(steps, default=0)


class Sampler(threading.Thread):
  """Samples (seconds, step, RSS, checkpoint bytes) until stopped."""

  def __init__(self, checkpoints: pathlib.Path, period: float):
    super().__init__(daemon=True)
    self.checkpoints, self.period = checkpoints, period
    self.samples = []
    self._stop_event = threading.Event()
    self._start = time.perf_counter()

  def sample(self):
    try:
      size = tree_bytes(self.checkpoints)
      step = newest_step(self.checkpoints)
    except FileNotFoundError:  # A directory renamed while listed.
      return
    self.samples.append((time.perf_counter() - self._start, step,
                         rss_bytes(), size))

  def run(self):
    while not self._stop_event.wait(self.period):
      self.sample()

  def stop(self):
    self._stop_event.set()
    self.join()
    self.sample()


def config_for(base, workdir: pathlib.Path):
  c = base.copy_and_resolve_references()
  if _TINY.value:
    c.data.name = 'synthetic_rgbd/tiny'
    c.data.crop_size = 32
    c.data.shorter_side = 24
    c.model.width = 8
    c.model.decoder_features = (16, 16)
    c.optim.batch_size = 4
    c.eval.batch_size = 4
  if not c.data.data_dir:
    c.data.data_dir = str(workdir / 'tfds')
  c.optim.num_steps = _STEPS.value
  c.train.log_every_steps = _CKPT_EVERY.value
  c.train.checkpoint_every_steps = _CKPT_EVERY.value
  c.train.keep_checkpoints = _KEEP.value
  return c


def report(samples, steps: int) -> str:
  lines = [f'{"seconds":>8} {"step":>6} {"RSS (MB)":>9} '
           f'{"checkpoints (MB)":>16}']
  lines += [f'{t:8.0f} {s:6d} {r / 1e6:9.0f} {c / 1e6:16.2f}'
            for t, s, r, c in samples]
  warm = [x for x in samples if x[1] >= steps // 4] or samples
  first, last = warm[0], samples[-1]
  lines += [
      '',
      f'RSS after warm-up (step {first[1]}): {first[2] / 1e6:.0f} MB; at the'
      f' end (step {last[1]}): {last[2] / 1e6:.0f} MB; growth '
      f'{(last[2] - first[2]) / 1e6:+.0f} MB',
      f'checkpoint directory: largest {max(x[3] for x in samples) / 1e6:.2f}'
      f' MB, at the end {last[3] / 1e6:.2f} MB',
  ]
  return '\n'.join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  with tempfile.TemporaryDirectory(prefix='cen_long_run_') as tmp:
    workdir = pathlib.Path(_WORKDIR.value or tmp)
    config = config_for(_CONFIG.value, workdir)
    # The eval period is in epochs: the task knows the epoch length.
    from cen_jax import tasks  # pylint: disable=g-import-not-at-top
    per_epoch = tasks.build(config, workdir).trainer().steps_per_epoch
    config.train.eval_every_epochs = max(
        1, round(_EVAL_EVERY.value / per_epoch))
    sampler = Sampler(workdir / 'checkpoints', _SAMPLE.value)
    sampler.start()
    start = time.perf_counter()
    summary = run.train_and_evaluate(config, str(workdir))
    seconds = time.perf_counter() - start
    sampler.stop()
  miou = summary.get('eval/ensemble/miou', float('nan'))
  print('\n'.join(
      [''] + common.run_header('benchmarks.long_run', sys.argv) + [
          f'{_STEPS.value} steps in {seconds:.0f} s, eval every '
          f'{config.train.eval_every_epochs} epochs of {per_epoch} steps, '
          f'checkpoint every {_CKPT_EVERY.value} steps, keep {_KEEP.value}; '
          f'final ensemble mIoU {miou:.2f}', '',
          report(sampler.samples, _STEPS.value), '']))


if __name__ == '__main__':
  app.run(main)
