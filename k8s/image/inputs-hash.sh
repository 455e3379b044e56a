#!/usr/bin/env bash
# Prints a hash of what goes into the project image (libs/, jobs/, jvm/, k8s/image/, setup.cfg
# with the pins, pyproject.toml), as they are in the working tree. build.sh writes it beside the
# OCI archive; k8s/local/load-image.sh rebuilds the archive when it differs.
set -euo pipefail
cd "$(dirname "$0")/../.."
git ls-files -z -- libs jobs jvm k8s/image setup.cfg pyproject.toml | xargs -0 sha256sum | sha256sum | cut -d' ' -f1
