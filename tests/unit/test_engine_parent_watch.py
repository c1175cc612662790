"""An engine process ends when the process that started it is SIGKILLed (the watch of
spar/engine/vllm_engine.py, here on plain processes; tests/faults has the real engine)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.trainer.distributed import alive

ROOT = Path(__file__).resolve().parents[2]

#: A server: it names itself as the engine's parent, starts the child and waits.
PARENT = """
import os, subprocess, sys, time
from spar.engine.vllm_engine import PARENT_ENV
os.environ[PARENT_ENV] = str(os.getpid())
child = subprocess.Popen([sys.executable, "-c", sys.argv[1]])
print(child.pid, flush=True)
time.sleep(120)
"""
#: An engine process: it watches its starter, then says so on its stdout.
CHILD = """
import signal, time
from spar.engine import vllm_engine
if {ignore_sigterm}:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # an engine stuck in its shutdown
vllm_engine.PARENT_GONE_GRACE_S = 1.0
vllm_engine._watch_starter()
print("watching", flush=True)
time.sleep(120)
"""


def orphan_lifetime(ignore_sigterm: bool, kill_early: bool = False) -> float:
    """Seconds an engine-like child lives on after its parent is SIGKILLed (early: while
    the child is still importing)."""
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, CHILD.format(ignore_sigterm=ignore_sigterm)],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    if not kill_early:
        assert parent.stdout.readline() == "watching\n"
    try:
        assert alive(child)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        killed = time.monotonic()
        while alive(child):
            assert time.monotonic() - killed < 10, "the child outlived its parent"
            time.sleep(0.05)
        return time.monotonic() - killed
    finally:
        if alive(child):
            os.kill(child, signal.SIGKILL)


def test_a_child_stops_as_soon_as_its_parent_is_killed() -> None:
    assert orphan_lifetime(ignore_sigterm=False) < 1.0


def test_a_child_that_does_not_stop_on_sigterm_exits_after_the_grace_period() -> None:
    assert 0.9 < orphan_lifetime(ignore_sigterm=True) < 3.0


def test_a_parent_killed_before_the_watch_starts_is_noticed() -> None:
    assert orphan_lifetime(ignore_sigterm=False, kill_early=True) < 5.0


@pytest.mark.parametrize("attr", ["run_engine_core"])
def test_wrapping_an_entry_point_twice_keeps_the_original(attr: str) -> None:
    from spar.engine import vllm_engine

    def original() -> str:
        return "vllm"

    class Proc:
        pass

    setattr(Proc, attr, staticmethod(original))
    vllm_engine._ORIGINAL_ENTRY_POINTS.pop("test", None)
    vllm_engine._wrap(Proc, attr, "test", vllm_engine._worker_main)
    vllm_engine._wrap(Proc, attr, "test", vllm_engine._worker_main)
    assert vllm_engine._ORIGINAL_ENTRY_POINTS.pop("test") is original
    assert getattr(Proc, attr) is vllm_engine._worker_main
