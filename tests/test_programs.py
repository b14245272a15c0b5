"""cen_jax/core/programs.py: a model's init is traced and compiled once per
distinct model in a process, whichever object asks."""

import contextlib

import flax.linen as nn
import jax
from jax import monitoring
import jax.numpy as jnp
import numpy as np

from cen_jax import tasks
from cen_jax.core import programs
from cen_jax.training import loop
from tests.test_loop import _config

_TRACE = '/jax/core/compile/jaxpr_trace_duration'
_COMPILE = '/jax/core/compile/backend_compile_duration'


@contextlib.contextmanager
def _jax_events():
  """The ``(event, function name)`` of every trace and compile inside."""
  events = []

  def listener(event, duration, *, fun_name='', **_):
    del duration
    if event in (_TRACE, _COMPILE):
      events.append((event, fun_name))

  monitoring.register_event_duration_secs_listener(listener)
  try:
    yield events
  finally:
    monitoring.unregister_event_duration_listener(listener)


class _Block(nn.Module):
  features: int

  @nn.compact
  def __call__(self, x, train):
    x = nn.Conv(self.features, (3, 3))(x)
    x = nn.BatchNorm(use_running_average=not train)(x)
    return nn.Dense(2)(x)


def test_init_equals_the_modules_own_init_and_compiles_once():
  x = jnp.zeros((2, 5, 5, 3))
  want = jax.jit(lambda r: _Block(4).init(r, x, train=False))(
      jax.random.key(7))
  with _jax_events() as events:
    got = programs.init(_Block(4), jax.random.key(7), x, train=False)
    # An equal module, another object; inputs given as shapes.
    again = programs.init(_Block(4), jax.random.key(7),
                          jax.ShapeDtypeStruct(x.shape, x.dtype), train=False)
    other = programs.init(_Block(6), jax.random.key(7), x, train=False)
  jax.tree.map(np.testing.assert_array_equal, got, want)
  jax.tree.map(np.testing.assert_array_equal, again, want)
  assert other['params']['Conv_0']['kernel'].shape == (3, 3, 3, 6)
  # _Block(4) once, _Block(6) once.
  assert events.count((_COMPILE, 'jit(_init)')) == 2


def test_tasks_built_from_one_config_share_their_init(tmp_path):
  first = tasks.build(_config(tmp_path), tmp_path)
  shapes = loop.abstract_variables(first)
  variables = first.start_variables(jax.random.key(0))
  with _jax_events() as events:
    second = tasks.build(_config(tmp_path), tmp_path)
    assert loop.abstract_variables(second) == shapes
    again = second.start_variables(jax.random.key(0))
  # No trace of the model and no compile: only the thin wrapper that
  # eval_shape traces (init_variables), whose inner program is cached.
  assert [e for e in events if e[0] == _COMPILE] == []
  assert [name for _, name in events] == ['init_variables']
  jax.tree.map(np.testing.assert_array_equal, again, variables)
