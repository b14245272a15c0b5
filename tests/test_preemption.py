"""cen_jax/training/preemption.py: signals become a stop request."""

import os
import signal

import pytest

from cen_jax.training import preemption


@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGINT])
def test_preemption_signal_requests_a_stop_at_the_next_boundary(signum):
  before = signal.getsignal(signum)
  with preemption.Preemption() as stop:
    assert not stop.reached(5)
    os.kill(os.getpid(), signum)  # handled synchronously, in this thread
    assert stop.reached(6)
    assert stop.signal_name == signal.Signals(signum).name
  assert signal.getsignal(signum) is before  # handlers restored


def test_preemption_second_sigint_interrupts_at_once():
  with preemption.Preemption():
    os.kill(os.getpid(), signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
      os.kill(os.getpid(), signal.SIGINT)
