"""Stop at a step boundary with a checkpoint when the machine is taken away.

Spot and preemptible VMs are stopped with SIGTERM and little warning; a
person stops a run with Ctrl-C (SIGINT). :class:`Preemption` turns either
into a request that the loop honours at the next step boundary: it saves a
checkpoint of that step (with the data position) and returns, so rerunning
the same command resumes exactly there.

With several processes (a TPU pod slice), every process must save the same
step. There, JAX's preemption service (started by
``jax.distributed.initialize``) catches SIGTERM on any host and agrees on
the step at which all of them stop (``reached_preemption_sync_point``);
this class then installs a handler for SIGINT only, whose request is
honoured by the process that got it at its next step boundary (Ctrl-C
reaches every process of a local multi-process run).
"""

import signal
import threading
from typing import Any

from absl import logging
import jax
from jax.experimental import multihost_utils


class Preemption:
  """A context manager that records SIGTERM / SIGINT as a stop request.

  A second SIGINT while a request is pending interrupts at once
  (``KeyboardInterrupt``), for a user who does not want to wait for the
  step to finish.
  """

  def __init__(self):
    self.signal_name: str | None = None
    self._previous: dict[int, Any] = {}

  def _handle(self, signum: int, frame: Any) -> None:
    del frame
    if self.signal_name is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt
    self.signal_name = signal.Signals(signum).name
    logging.warning('%s received: saving a checkpoint at the next step '
                    'boundary, then stopping.', self.signal_name)

  def _signals(self) -> tuple[int, ...]:
    if jax.process_count() > 1:
      return (signal.SIGINT,)  # JAX's preemption service owns SIGTERM.
    return (signal.SIGTERM, signal.SIGINT)

  def __enter__(self) -> 'Preemption':
    if threading.current_thread() is threading.main_thread():
      for signum in self._signals():
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc_info: Any) -> None:
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous.clear()

  def reached(self, step: int) -> bool:
    """Whether to save and stop after ``step`` completed updates."""
    if self.signal_name is not None:
      return True
    if jax.process_count() > 1:
      try:
        if multihost_utils.reached_preemption_sync_point(step):
          self.signal_name = 'SIGTERM (preemption sync point)'
          return True
      except RuntimeError:  # The preemption service is disabled.
        return False
    return False
