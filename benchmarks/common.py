"""What every benchmark prints first: the exact command and the machine."""

import shlex
from typing import Sequence

import jax


def run_header(script: str, argv: Sequence[str]) -> list[str]:
  """``command: python -m <script> <args>`` and the JAX version and devices."""
  return [
      f'command: python -m {script} ' + ' '.join(
          shlex.quote(a) for a in argv[1:]),
      f'jax {jax.__version__}, {jax.device_count()} x '
      f'{jax.devices()[0].device_kind}',
  ]
