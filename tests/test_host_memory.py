"""main.py restarts once with glibc settings that keep freed memory."""

import os
import subprocess
import sys

from cen_jax.training import host_memory

_PROBE = ('from cen_jax.training import host_memory; '
          'host_memory.reexec_with_kept_memory(); import os; '
          "print([os.environ.get(k) for k in host_memory.SETTINGS])")


def _run(env_update):
  env = {k: v for k, v in os.environ.items()
         if k not in host_memory.SETTINGS and k != host_memory.OPT_OUT}
  env.update(env_update)
  out = subprocess.run([sys.executable, '-c', _PROBE], env=env, check=True,
                       capture_output=True, text=True,
                       cwd=os.path.dirname(os.path.dirname(__file__)))
  return out.stdout.strip()


def test_restarts_once_with_the_settings_where_glibc_runs():
  # On glibc Linux (CI) the child restarts with the settings; elsewhere it
  # must run on untouched.
  want = (list(host_memory.SETTINGS.values())
          if host_memory.needs_reexec({}) else [None] * 4)
  assert _run({}) == str(want)


def test_opt_out_and_user_settings_are_left_alone():
  assert _run({host_memory.OPT_OUT: '0'}) == str([None] * 4)
  # A user's own malloc setting: no restart, nothing added.
  assert _run({'MALLOC_ARENA_MAX': '4'}) == str(['4', None, None, None])
  assert not host_memory.needs_reexec({host_memory.OPT_OUT: '0'})
  assert not host_memory.needs_reexec({'MALLOC_MMAP_MAX_': '0'})
