"""Pure parts of the local service manager."""

from __future__ import annotations

import base64
import os
import socket
from pathlib import Path
from unittest import mock

import pytest

from clickrec import services
from clickrec.errors import ServiceError


def test_cluster_id_never_starts_with_a_dash() -> None:
    # kafka-storage reads an id starting with '-' as an option; such draws are redrawn
    dash_first = bytes([0xF8]) + bytes(15)  # base64url "-A..."
    plain = bytes(range(16))
    assert base64.urlsafe_b64encode(dash_first).decode().startswith("-")
    fake = [mock.Mock(bytes=dash_first), mock.Mock(bytes=plain)]
    with mock.patch.object(services.uuid, "uuid4", side_effect=fake):
        cid = services.kafka_cluster_id()
    assert cid == base64.urlsafe_b64encode(plain).decode().rstrip("=") and len(cid) == 22


def test_formatted_cluster_id_is_read_back_from_kafkas_storage(tmp_path: Path) -> None:
    assert services.formatted_cluster_id(tmp_path / "logs") is None  # never formatted
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "meta.properties").write_text(
        "#\n#Mon Dec 07 22:00:00 UTC 2026\nnode.id=1\ndirectory.id=abc\nversion=1\ncluster.id=Vtb-jbvSQji2qMVbaeRxrQ\n"
    )
    assert services.formatted_cluster_id(tmp_path / "logs") == "Vtb-jbvSQji2qMVbaeRxrQ"


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


def test_a_port_is_free_again_once_its_server_stopped_but_not_while_it_listens() -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((services.HOST, 0))
    server.listen()
    port = server.getsockname()[1]
    client = socket.create_connection((services.HOST, port))
    accepted, _ = server.accept()
    with pytest.raises(ServiceError, match=f"port {port} .* is taken"):
        services.check_port_free(port, "test")
    accepted.close()  # the server side closes first: its end waits in TIME_WAIT on `port`
    server.close()
    client.close()
    services.check_port_free(port, "test")  # a restarted server can bind it
