"""Test-wide JAX settings: 4 fake CPU devices and a persistent compile cache."""

import os
import pathlib

import jax
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
