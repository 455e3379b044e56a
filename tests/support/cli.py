"""Running the `clickrec` command and the jobs' entry files in the test process.

The in-process runs share the run's Spark session (the factory's getOrCreate returns it), so
they cost no JVM start; the real console entry point and spark-submit are run as processes only
where the process itself is what a test checks (exit codes, signals, the classpath).
"""

from __future__ import annotations

import runpy
import subprocess
import sys
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
