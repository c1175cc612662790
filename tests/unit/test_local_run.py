"""The run folder of `spar up`: one log per service, the console kept for spar's lines, and
a service that exits reported with the end of its log."""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path

import pytest

from spar.errors import SparError
from spar_cli.commands.local_run import LocalRun, StatusLine, new_run_folder, tail


def test_each_run_gets_its_own_folder_and_latest_points_to_it(tmp_path: Path) -> None:
    first, second = new_run_folder(tmp_path), new_run_folder(tmp_path)
    assert first != second and first.parent == second.parent == tmp_path / "runs"
    assert (tmp_path / "runs" / "latest").resolve() == second.resolve()


def test_a_service_writes_into_its_log_not_the_console(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    run = LocalRun(tmp_path)
    script = "import sys; print('out', flush=True); print('err', file=sys.stderr); sys.exit(3)"
    run.start("actor", [sys.executable, "-c", script], {})
    run.children["actor"].wait(30)
    assert run.exited() == {"actor": 3}
    assert run.log("actor").read_text().split() == ["out", "err"]
    assert capfd.readouterr().out == ""
    message = run.describe_exit("actor", 3)
    assert message.startswith(f"the actor exited (exit status 3); the end of {run.log('actor')}")
    assert message.endswith("  out\n  err")


def test_start_up_stops_with_the_log_of_a_service_that_died(tmp_path: Path) -> None:
    run = LocalRun(tmp_path)
    run.start("refiner", [sys.executable, "-c", "raise SystemExit('no model here')"], {})
    run.children["refiner"].wait(30)
    with pytest.raises(SparError, match=r"(?s)the refiner exited \(exit status 1\).*no model here"):
        run.wait_serving({"refiner": "127.0.0.1:9"}, 60, {}, StatusLine(io.StringIO()))


def test_stop_ends_every_service(tmp_path: Path) -> None:
    run = LocalRun(tmp_path)
    run.start("trainer", [sys.executable, "-c", "import time; time.sleep(60)"], {})
    t0 = time.monotonic()
    run.stop()
    assert run.exited() == {"trainer": -15} and time.monotonic() - t0 < 10


def test_tail_keeps_the_last_state_of_a_progress_bar(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text(
        "start\nloading 10%\rloading 50%\rloading 100%\n" + "".join(f"{i}\n" for i in range(40))
    )
    lines = tail(log, 3).splitlines()
    assert lines == ["  37", "  38", "  39"]
    assert "  loading 100%" in tail(log, 50).splitlines()


def test_the_status_line_redraws_in_place_only_on_a_terminal() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty, pipe = Tty(), io.StringIO()
    for stream in (tty, pipe):
        line = StatusLine(stream)
        line.update("waiting 1 s")
        line.update("waiting 2 s")
        line.done("ready")
    assert tty.getvalue() == "\r\x1b[Kwaiting 1 s\r\x1b[Kwaiting 2 s\r\x1b[Kready\n"
    assert pipe.getvalue() == "ready\n"
