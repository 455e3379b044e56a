"""The image's runtime config as k8s/image/Dockerfile declares it, for the Docker-less build.

Docker applies the Dockerfile's ENV, USER, WORKDIR and ENTRYPOINT itself; k8s/image/build-oci.sh
gives the OCI image the same values by reading them here, so they are written in one place.
Only the final stage counts, and values must be literal (no ${VAR} expansion, no quoting).

    python3 k8s/image/image_config.py env     NAME=VALUE lines (install.sh's environment)
    python3 k8s/image/image_config.py umoci   `umoci config` flags, one per line
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

DOCKERFILE = Path(__file__).resolve().parent / "Dockerfile"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the final stage, continuation lines joined."""
    out: list[tuple[str, str]] = []
    for line in re.sub(r"\\\n", " ", text).splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        if word.upper() == "FROM":
            out = []
        out.append((word.upper(), rest.strip()))
    return out


def image_config(text: str | None = None) -> dict[str, object]:
    """{"env": {name: value}, "user": str, "workdir": str, "entrypoint": [str], "cmd": [str]}."""
    if text is None:
        text = DOCKERFILE.read_text(encoding="utf-8")
    config: dict[str, object] = {"env": {}, "user": "0", "workdir": "/", "entrypoint": [], "cmd": []}
    env: dict[str, str] = config["env"]  # type: ignore[assignment]
    for word, args in instructions(text):
        if word == "ENV":
            for pair in args.split():
                name, sep, value = pair.partition("=")
                if not sep or "$" in value or '"' in value or "'" in value:
                    raise ValueError(f"ENV must be literal NAME=VALUE pairs: {pair!r}")
                env[name] = value
        elif word == "USER":
            config["user"] = args
        elif word == "WORKDIR":
            config["workdir"] = args
        elif word in ("ENTRYPOINT", "CMD"):
            value = json.loads(args)
            if not isinstance(value, list):
                raise ValueError(f"{word} must be in JSON (exec) form")
            config[word.lower()] = value
    return config


def umoci_flags(config: dict[str, object]) -> list[str]:
    flags = [f"--config.env={k}={v}" for k, v in config["env"].items()]  # type: ignore[union-attr]
    flags += [f"--config.user={config['user']}", f"--config.workingdir={config['workdir']}"]
    flags += [f"--config.entrypoint={a}" for a in config["entrypoint"]]  # type: ignore[union-attr]
    flags += [f"--config.cmd={a}" for a in config["cmd"]]  # type: ignore[union-attr]
    return flags


def main(argv: list[str]) -> int:
    config = image_config()
    if argv == ["env"]:
        lines = [f"{k}={v}" for k, v in config["env"].items()]  # type: ignore[union-attr]
    elif argv == ["umoci"]:
        lines = umoci_flags(config)
    else:
        print(__doc__, file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
