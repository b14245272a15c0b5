"""Test-wide JAX settings: 4 fake CPU devices and a persistent compile cache."""

import os
import pathlib

import jax

# Must run before the first JAX computation. Sharding tests need 4 devices;
# everything else runs on device 0 as usual.
jax.config.update('jax_num_cpu_devices', 4)
jax.config.update('jax_platforms', 'cpu')
_CACHE = os.environ.get(
    'CEN_JAX_TEST_CACHE',
    str(pathlib.Path(__file__).resolve().parent.parent / '.jax_cache'))
jax.config.update('jax_compilation_cache_dir', _CACHE)
jax.config.update('jax_persistent_cache_min_compile_time_secs', 1.0)
jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
# Tests run tiny shapes: compile time dominates, so skip XLA's heavy passes.
# Numerics are unchanged (the parity tests pass with it on).
jax.config.update('jax_disable_most_optimizations', True)
