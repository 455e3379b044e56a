"""The e2e tier needs the local cluster of `make k8s-up`; `make e2e` starts it (and loads the image)."""

from __future__ import annotations

import pytest

from tests.support.cluster import KUBECONFIG, KUBECTL, kubectl


@pytest.fixture(scope="session", autouse=True)
def cluster() -> None:
    if not (KUBECTL.exists() and KUBECONFIG.exists()):
        pytest.fail("no local cluster: run `make k8s-up` (or `make e2e`, which starts it)")
    ready = kubectl("get", "--raw", "/readyz", check=False)
    if ready.returncode != 0:
        pytest.fail(f"the local cluster's API server is not ready: {ready.stderr.strip()} (make k8s-up)")
