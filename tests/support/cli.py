"""Running the `clickrec` command and the jobs' entry files in the test process.

The in-process runs share the run's Spark session (the factory's getOrCreate returns it), so
they cost no JVM start; the real console entry point and spark-submit are run as processes only
where the process itself is what a test checks (exit codes, signals, the classpath).
"""

from __future__ import annotations

import os
import runpy
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clickrec.cli import invoke


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> subprocess.CompletedProcess[str]:
    """`clickrec ARGS` in this process: exit code, stdout and stderr as a finished process has them."""
    capsys.readouterr()
    code = invoke(list(args))
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), code, out, err)


def run_entry(path: Path, args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run a Python entry file as `python path args` does, in this process: (exit code, out, err)."""
    saved = sys.argv
    sys.argv = [str(path), *args]
    try:
        with pytest.raises(SystemExit) as exited:  # main() leaves with sys.exit(code)
            runpy.run_path(str(path), run_name="__main__")
    finally:
        sys.argv = saved
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err


def start_cli(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """`clickrec ARGS` as a process of its own group (its JVM too): stdout piped, stderr to `log`."""
    with log.open("ab") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "clickrec.cli", *args], cwd=Path(__file__).resolve().parents[2],
            stdout=subprocess.PIPE, stderr=err, env=env, start_new_session=True,
        )


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL `proc`'s process group and wait until every member (the JVM child) is gone."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    raise AssertionError(f"the process group of {proc.args} outlived SIGKILL by 60 s")
