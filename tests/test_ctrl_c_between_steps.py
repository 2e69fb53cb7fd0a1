"""The first Ctrl-C waits for the batch boundary; a second one interrupts at once; several processes keep Python's."""

from __future__ import annotations

import os
import signal
from types import SimpleNamespace

import pytest

from objmtl.callbacks.ctrl_c import InterruptBetweenSteps


def test_first_sigint_waits_for_the_batch_boundary_second_acts_at_once() -> None:
    before = signal.getsignal(signal.SIGINT)
    cb = InterruptBetweenSteps()
    cb.setup(SimpleNamespace(world_size=1), None, "fit")
    try:
        cb.on_train_batch_end(None)  # nothing asked yet
        os.kill(os.getpid(), signal.SIGINT)  # the handler runs here and only notes it
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)  # the second one does not wait
        with pytest.raises(KeyboardInterrupt):
            cb.on_train_batch_start(None)
        assert signal.getsignal(signal.SIGINT) is before  # raised at the boundary: Python's handler is back
    finally:
        cb.teardown(None, None, "fit")
    assert signal.getsignal(signal.SIGINT) is before


def test_several_processes_keep_pythons_handler() -> None:
    before = signal.getsignal(signal.SIGINT)
    cb = InterruptBetweenSteps()
    cb.setup(SimpleNamespace(world_size=2), None, "fit")
    assert signal.getsignal(signal.SIGINT) is before
    cb.teardown(None, None, "fit")
