"""What the step benchmarks share: the header (the exact command and the
machine), XLA's FLOP count, peak memory and the results table."""

import re
import resource
import shlex
from typing import Any, Sequence

import jax


def run_header(script: str, argv: Sequence[str]) -> list[str]:
  """``command: python -m <script> <args>`` and the JAX version and devices."""
  return [
      f'command: python -m {script} ' + ' '.join(
          shlex.quote(a) for a in argv[1:]),
      f'jax {jax.__version__}, {jax.device_count()} x '
      f'{jax.devices()[0].device_kind}',
  ]


def flops_of(compiled: Any) -> float | None:
  """FLOPs of one call from XLA's cost analysis (dict, or list of dicts)."""
  try:
    cost = compiled.cost_analysis()
  except Exception:  # pylint: disable=broad-except
    return None  # Some backends do not implement it.
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  if not cost or 'flops' not in cost:
    return None
  return float(cost['flops'])


def peak_memory() -> tuple[float, str]:
  """(bytes, what): device peak where reported, else the process max RSS."""
  stats = jax.local_devices()[0].memory_stats() or {}
  if 'peak_bytes_in_use' in stats:
    return float(stats['peak_bytes_in_use']), 'device peak_bytes_in_use'
  # ru_maxrss is in KiB on Linux.
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0
  return float(rss), 'process max RSS (host)'


def si(value: float | None, unit: str) -> str:
  if value is None:
    return 'n/a'
  for prefix, scale in (('T', 1e12), ('G', 1e9), ('M', 1e6), ('k', 1e3)):
    if abs(value) >= scale:
      return f'{value / scale:.2f} {prefix}{unit}'
  return f'{value:.2f} {unit}'


def table(rows: dict[str, dict[str, Any]]) -> str:
  """The results, one column per measured step."""
  spec = (
      ('lower + compile (s)', lambda r: f'{r["compile_s"]:.2f}'),
      ('  of which lower (s)', lambda r: f'{r["lower_s"]:.2f}'),
      ('step median (ms)', lambda r: f'{r["median_s"] * 1e3:.2f}'),
      ('step p90 (ms)', lambda r: f'{r["p90_s"] * 1e3:.2f}'),
      ('images/s', lambda r: f'{r["images_per_s"]:.1f}'),
      ('XLA FLOPs/step (per device)', lambda r: si(r['flops'], 'FLOP')),
      ('achieved FLOP/s (per device)',
       lambda r: si(r['flops_per_s'], 'FLOP/s')),
      ('peak memory, cumulative', lambda r: si(r['memory'], 'B')),
  )
  width = 30
  lines = [f'{"":<{width}}' + ''.join(f'{k:>16}' for k in rows)]
  for label, fmt in spec:
    lines.append(f'{label:<{width}}' + ''.join(
        f'{fmt(r):>16}' for r in rows.values()))
  labels = sorted({r['memory_label'] for r in rows.values()})
  lines.append(f'(peak memory: {", ".join(labels)})')
  return '\n'.join(lines)


def workdir_name(name: str) -> str:
  """A directory name for a model: ``'no exchange'`` -> ``'no_exchange'``."""
  return re.sub(r'[^A-Za-z0-9_.-]', '_', name)


def translation_variant(base: Any, *, root: Any, epochs: float | None,
                        seed: int | None, exchange: str | None = None) -> Any:
  """A copy of a translation ``base`` config for one benchmark model.

  Args:
    base: the benchmark's config.
    root: the benchmark's workdir root; an empty ``data.data_dir`` becomes
      ``<root>/tfds``, so the dataset is generated once for every model.
    epochs: ``optim.num_epochs`` (a fraction allowed), or None.
    seed: the seed, or None for the config's.
    exchange: an exchange rule replacing the config's (its kwargs cleared),
      or None.
  """
  c = base.copy_and_resolve_references()
  if exchange is not None:
    c.model.exchange = exchange
    c.model.exchange_kwargs = {}
  if not c.data.data_dir:
    c.data.data_dir = str(root / 'tfds')
  if epochs is not None:
    with c.ignore_type():  # num_epochs is an int field; allow 0.5 too.
      c.optim.num_epochs = int(epochs) if float(epochs).is_integer() else (
          float(epochs))
    c.optim.num_steps = -1  # Else a step count would override it.
  if seed is not None:
    c.seed = seed
  return c
