"""The KMS's metrics (docs/metrics.md): a ticket request and a refused resolve over real
HTTPS on 127.0.0.1, then ``/metrics`` scraped; built without metrics, none are served."""

from __future__ import annotations

import datetime
import os
import urllib.request
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet import reactor, threads

import certs
from kms import client as kms_client
from kms.cli import post as kms_post
from kms.config import KmsConfig, ProvisionedUser
from kms.metrics import message_type
from kms.service import build
from kms.store import User
from mikey.constants import DataType

NOW = datetime.datetime.now(datetime.UTC)
DOMAIN = "lab.example"
KMS_ID = "kms.e2ae.lab"


def aor(name: str) -> str:
    return f"sip:{name}@{DOMAIN}"


def _scrape(address: tuple[str, int]) -> str:
    host, port = address
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as reply:
        return str(reply.read().decode())


def test_message_type_from_the_mikey_header() -> None:
    assert message_type(bytes([1, DataType.REQUEST_INIT_PSK, 0])) == "request_init"
    assert message_type(bytes([1, DataType.RESOLVE_INIT_PSK, 0])) == "resolve_init"
    assert message_type(bytes([1, DataType.PSK_INIT, 0])) == "other"
    assert message_type(b"x") == "other"


@pytest_twisted.ensureDeferred
async def test_a_ticket_request_and_a_refused_resolve_are_counted(
    tmp_path: Path, cleanup: list[Any]
) -> None:
    ids = {n: certs.generate(n, now=NOW) for n in ("alice", "bob", "carol", "kms")}
    keys = {n: os.urandom(16) for n in ("alice", "bob", "carol")}
    config = KmsConfig(
        identity=KMS_ID,
        listen=("127.0.0.1", 0),
        cert=Path("unused"),
        key=Path("unused"),
        state=tmp_path / "kms.sqlite",
        users=tuple(ProvisionedUser(User(aor(n), keys[n]), (ids[n].fingerprint(),)) for n in keys),
    )
    kms = build(config, identity=ids["kms"], reactor=reactor, metrics=("127.0.0.1", 0))
    kms.startService()
    cleanup.append(kms.stopService)
    assert kms.metrics_address is not None and kms.metrics_address[1] != 0
    pin = ids["kms"].fingerprint()

    now = NOW.timestamp()
    request = kms_client.request_init(
        aor("alice"), keys["alice"], (aor("bob"),), now, kms=KMS_ID, sessions=1
    )
    alice_cert, alice_key = certs.write(ids["alice"], tmp_path / "alice")
    status, body = await threads.deferToThread(
        kms_post, kms.address, pin, alice_cert, alice_key, request.encode(), 5.0
    )
    assert status == 200
    reply, _ = kms_client.open_reply(body, keys["alice"], request)
    ticket = kms_client.ticket_of(reply)
    # carol is not a responder of the ticket: her resolve is refused
    resolve = kms_client.resolve_init(
        aor("carol"), keys["carol"], ticket, now, kms=KMS_ID, csb_id=request.header.csb_id
    )
    carol_cert, carol_key = certs.write(ids["carol"], tmp_path / "carol")
    status, _ = await threads.deferToThread(
        kms_post, kms.address, pin, carol_cert, carol_key, resolve.encode(), 5.0
    )
    assert status == 403

    page = await threads.deferToThread(_scrape, kms.metrics_address)
    assert 'e2ae_kms_requests_total{message_type="request_init",result="ok"} 1.0' in page
    assert 'e2ae_kms_requests_total{message_type="resolve_init",result="AUTH_FAILURE"} 1.0' in page
    assert "e2ae_kms_tickets_issued_total 1.0" in page
    assert "e2ae_kms_resolves_refused_total 1.0" in page
    assert keys["alice"].hex() not in page and ticket.data.hex() not in page


def test_built_without_metrics_the_kms_serves_none(tmp_path: Path) -> None:
    config = KmsConfig(
        identity=KMS_ID,
        listen=("127.0.0.1", 0),
        cert=Path("unused"),
        key=Path("unused"),
        state=tmp_path / "kms.sqlite",
        users=(),
    )
    kms = build(config, identity=certs.generate("kms", now=NOW), reactor=reactor)
    assert kms.metrics_address is None and kms.counters is None
    kms.store.close()
