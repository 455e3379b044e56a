"""Where the project keeps its caches and local state.

The caches (`.cache/`) are made by `make setup`; the local state (`.lake/`, `.clickrec/`) by
the jobs and `clickrec services`. Both are git-ignored. CLICKREC_HOME overrides the root, which
otherwise is the source checkout that holds this package (an editable install).
"""

from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    """Return the directory that holds `.cache/` and, by default, `.clickrec/`."""
    env = os.environ.get("CLICKREC_HOME")
    if env:
        return Path(env).resolve()
    here = Path(__file__).resolve()
    # libs/clickrec/paths.py -> the checkout root, when installed in editable mode
    candidate = here.parents[2]
    if (candidate / "setup.cfg").is_file():
        return candidate
    return Path.cwd().resolve()


def cache_dir() -> Path:
    """Return `.cache/` (venv-independent caches: jars, service binaries)."""
    return Path(os.environ.get("CLICKREC_CACHE", project_root() / ".cache")).resolve()


def jars_dir(kind: str) -> Path:
    """Return the cached jar folder for `kind` ("spark" or "kafka")."""
    return cache_dir() / "jars" / kind


def bin_dir() -> Path:
    """Return the folder of service binaries built at setup (minio)."""
    return cache_dir() / "bin"


def state_dir() -> Path:
    """Return `.clickrec/` (service data, pids, logs), git-ignored."""
    return Path(os.environ.get("CLICKREC_STATE", project_root() / ".clickrec")).resolve()
