"""Pure parts of the local service manager."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from unittest import mock

from clickrec import services


def test_cluster_id_never_starts_with_a_dash() -> None:
    # kafka-storage reads an id starting with '-' as an option; such draws are redrawn
    dash_first = bytes([0xF8]) + bytes(15)  # base64url "-A..."
    plain = bytes(range(16))
    assert base64.urlsafe_b64encode(dash_first).decode().startswith("-")
    fake = [mock.Mock(bytes=dash_first), mock.Mock(bytes=plain)]
    with mock.patch.object(services.uuid, "uuid4", side_effect=fake):
        cid = services.kafka_cluster_id()
    assert cid == base64.urlsafe_b64encode(plain).decode().rstrip("=") and len(cid) == 22


def test_private_files_are_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    from clickrec.services import write_private

    previous = os.umask(0)
    try:
        target = tmp_path / "services.env"
        write_private(target, "export AWS_SECRET_ACCESS_KEY=x\n")
        write_private(target, "export AWS_SECRET_ACCESS_KEY=y\n")  # replaced, not refused
    finally:
        os.umask(previous)
    assert target.read_text() == "export AWS_SECRET_ACCESS_KEY=y\n"
    assert oct(target.stat().st_mode & 0o777) == "0o600"
    assert [p.name for p in tmp_path.iterdir()] == ["services.env"]
