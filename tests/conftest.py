"""Test-wide JAX settings: 4 fake CPU devices and a persistent compile cache.

Also the end-of-run report of where the suite's time went in JAX (tracing,
lowering, compiling), summed over the xdist workers.
"""

import collections
import os
import pathlib

import jax
from jax import monitoring
import pytest

# Must run before the first JAX computation. Sharding tests need 4 devices;
# everything else runs on device 0 as usual.
jax.config.update('jax_num_cpu_devices', 4)
jax.config.update('jax_platforms', 'cpu')
_CACHE = os.environ.get(
    'CEN_JAX_TEST_CACHE',
    str(pathlib.Path(__file__).resolve().parent.parent / '.jax_cache'))
jax.config.update('jax_compilation_cache_dir', _CACHE)
# Every program, however quick to compile: tests build new jitted functions
# for the same programs, and subprocesses start with an empty memory cache.
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
# Tests run tiny shapes: compile time dominates, so skip XLA's heavy passes.
# Numerics are unchanged (the parity tests pass with it on).
jax.config.update('jax_disable_most_optimizations', True)


@pytest.fixture(scope='module')
def xla_optimized():
  """XLA's optimisations on, for a module of full-size networks.

  With them off, the full-size translation generator's training forward and
  gradients at 256x256 took 87 s to run (4 s to compile); with them on, 12 s
  (8 s to compile). The tiny models elsewhere are the other way round.
  """
  before = jax.config.values['jax_disable_most_optimizations']
  jax.config.update('jax_disable_most_optimizations', False)
  yield
  jax.config.update('jax_disable_most_optimizations', before)


def pytest_collection_modifyitems(items):
  """Files with a ``slow`` test first, then by number of tests.

  pytest-xdist hands whole files to the workers in this order (with
  ``--no-loadscope-reorder``, set in pyproject.toml; its own reordering is
  by number of tests alone). That put the one-test, two-minute
  multiprocess file last, and the other worker idled through it: 136 s of
  a cold run. Long files first leaves short ones to even out the end.
  """
  slow = {item.path for item in items if item.get_closest_marker('slow')}
  count = collections.Counter(item.path for item in items)
  items.sort(key=lambda item: (item.path not in slow, -count[item.path]))


# JAX's own duration events, and the names the report gives them. A compile
# that the persistent cache answers is timed as a compile too (the load).
_JAX_EVENTS = {
    '/jax/core/compile/jaxpr_trace_duration': 'tracing',
    '/jax/core/compile/jaxpr_to_mlir_module_duration': 'lowering to StableHLO',
    '/jax/core/compile/backend_compile_duration':
        'XLA compile, or load from the cache',
}
_CACHE_HITS = '/jax/compilation_cache/cache_hits'
_jax_seconds = collections.Counter()
_jax_counts = collections.Counter()


def _on_duration(event, duration, **_):
  if event in _JAX_EVENTS:
    _jax_seconds[event] += duration
    _jax_counts[event] += 1


def _on_event(event, **_):
  if event == _CACHE_HITS:
    _jax_counts[event] += 1


monitoring.register_event_duration_secs_listener(_on_duration)
monitoring.register_event_listener(_on_event)


def pytest_sessionfinish(session):
  """An xdist worker hands its sums to the controller."""
  workeroutput = getattr(session.config, 'workeroutput', None)
  if workeroutput is not None:
    workeroutput['jax_seconds'] = dict(_jax_seconds)
    workeroutput['jax_counts'] = dict(_jax_counts)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):  # pylint: disable=unused-argument
  """The controller adds up its workers' sums."""
  output = getattr(node, 'workeroutput', {})
  _jax_seconds.update(output.get('jax_seconds', {}))
  _jax_counts.update(output.get('jax_counts', {}))


def pytest_terminal_summary(terminalreporter, config):
  if hasattr(config, 'workeroutput') or not _jax_counts:
    return
  terminalreporter.section('time in JAX, summed over the test processes')
  for event, name in _JAX_EVENTS.items():
    terminalreporter.write_line(
        f'{name:<38}{_jax_seconds[event]:8.1f} s  '
        f'({_jax_counts[event]} calls)')
  terminalreporter.write_line(
      f'{"of those compiles, persistent-cache hits":<38}'
      f'{_jax_counts[_CACHE_HITS]:8d}')
  terminalreporter.write_line(
      '(not counted: the subprocesses some tests start)')
