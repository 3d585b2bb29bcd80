"""KMS-protected immediate messages between UEs on real loopback sockets: an in-process KMS
over HTTPS, the real P-CSCF, the core stub and UeSims. A text reaches Bob and only Bob; the
ticket is reused for the next message; a receiver the ticket does not name gets no key and
says so; tampered, replayed, oversized and malformed MESSAGEs get their 4xx with a Warning
and the UE carries on."""

from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task, threads
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import globalLogPublisher

import certs
import lab.ue as lab_ue
from certs.tls import KeyLogWriter
from immsg import cms, mime
from immsg import core as im
from kms.config import KmsConfig, ProvisionedUser
from kms.service import KmsService, build
from kms.store import User
from lab.core import CoreStub
from lab.uesim import UeSim
from pcscf.service import SipService
from pcscf.sip import Request, Response, parse_datagram
from pcscf.sip.message import make_response
from pcscf.sip.proxy import Peer, ProxyConfig
from tests.conftest import REPO, e2ae_command, require_tool, run_e2ae

NOW = datetime.datetime.now(datetime.UTC)
DOMAIN = "lab.example"
USERS = ("alice", "bob", "carol")
KMS_ID = "kms.e2ae.lab"


def aor(name: str) -> str:
    return f"sip:{name}@{DOMAIN}"


@pytest.fixture(scope="module")
def ids() -> dict[str, certs.CertAndKey]:
    return {name: certs.generate(name, now=NOW) for name in (*USERS, "kms")}


@pytest.fixture(scope="module")
def keys() -> dict[str, bytes]:
    return {name: os.urandom(16) for name in USERS}


@pytest.fixture
def kms(
    tmp_path: Path, ids: dict[str, certs.CertAndKey], keys: dict[str, bytes], cleanup: list[Any]
) -> KmsService:
    config = KmsConfig(
        identity=KMS_ID,
        listen=("127.0.0.1", 0),
        cert=Path("unused"),
        key=Path("unused"),
        state=tmp_path / "kms.sqlite",
        users=tuple(ProvisionedUser(User(aor(n), keys[n]), (ids[n].fingerprint(),)) for n in USERS),
    )
    service = build(config, identity=ids["kms"], reactor=reactor)
    service.startService()
    cleanup.append(service.stopService)
    return service


@pytest.fixture
def gm(cleanup: list[Any]) -> tuple[str, int]:
    core = CoreStub(reactor, domain=DOMAIN)
    port = core.listen()
    cleanup.append(core.stop)
    service = SipService(
        ProxyConfig(
            gm=("127.0.0.1", 0),
            core=("127.0.0.1", 0),
            next_hop=Peer("core", "udp", "127.0.0.1", port),
            network_mechanisms=frozenset({"msrp-tls", "bfcp-tls"}),
        ),
        reactor=reactor,
    )
    service.listen()
    cleanup.append(service.stop)
    return service.config.gm


async def _ue(
    name: str,
    ids: dict[str, certs.CertAndKey],
    keys: dict[str, bytes],
    kms: KmsService,
    gm: tuple[str, int],
    cleanup: list[Any],
    keylog: KeyLogWriter | None = None,
    **kw: Any,
) -> UeSim:
    access = lab_ue.KmsAccess(kms.address, ids["kms"].fingerprint(), keys[name], **kw)
    sim = UeSim(
        reactor, name, ids[name], gm, domain=DOMAIN, kms=access, media_timeout=5, keylog=keylog
    )
    await sim.start()
    cleanup.append(sim.stop)
    assert (await sim.register()).status == 200
    return sim


@pytest_twisted.ensureDeferred
async def test_a_protected_message_reaches_bob_and_the_ticket_is_reused(
    ids: Any, keys: Any, kms: KmsService, gm: Any, cleanup: list[Any]
) -> None:
    alice = await _ue("alice", ids, keys, kms, gm, cleanup)
    bob = await _ue("bob", ids, keys, kms, gm, cleanup)
    first = await alice.im.send(bob.aor, "hello Bob")
    assert (first.status, first.ticket_reused) == (200, False)
    got = await bob.im.next_message()
    assert (got.sender, got.protected_by, got.text) == (alice.aor, alice.aor, "hello Bob")
    assert not got.reprotected
    second = await alice.im.send(bob.aor, "again")
    assert (second.status, second.ticket_reused) == (200, True)
    assert (await bob.im.next_message()).text == "again"
    assert alice.kms_exchanges == ["REQUEST_INIT_PSK"]
    assert bob.kms_exchanges == ["RESOLVE_INIT_PSK", "RESOLVE_INIT_PSK"]
    assert bob.im.refused == []


@pytest_twisted.ensureDeferred
async def test_a_receiver_the_ticket_does_not_name_gets_no_key_and_says_so(
    ids: Any, keys: Any, kms: KmsService, gm: Any, cleanup: list[Any]
) -> None:
    alice = await _ue("alice", ids, keys, kms, gm, cleanup, responder=aor("bob"))
    carol = await _ue("carol", ids, keys, kms, gm, cleanup)
    sent = await alice.im.send(carol.aor, "not for Carol")
    assert sent.status == 493
    assert sent.warning is not None and "no key from the KMS: AUTH_FAILURE" in sent.warning
    (refused,) = carol.im.refused
    assert refused.status == 493 and refused.sender == alice.aor
    assert carol.im.received == []


class _Raw(DatagramProtocol):
    """Sends MESSAGE datagrams straight to a UE and collects the responses."""

    def __init__(self) -> None:
        self.responses: list[Response] = []

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        message = parse_datagram(datagram)
        if isinstance(message, Response):
            self.responses.append(message)


def _message(target: str, ct: str, body: bytes, port: int, n: int) -> bytes:
    request = Request(
        (
            ("Via", f"SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKraw{n}"),
            ("Max-Forwards", "70"),
            ("From", f"<{aor('alice')}>;tag=raw{n}"),
            ("To", f"<{target}>"),
            ("Call-ID", f"raw-{n}@127.0.0.1"),
            ("CSeq", "1 MESSAGE"),
            ("Content-Type", ct),
        ),
        body,
        "MESSAGE",
        target,
    )
    return request.serialise()


async def _last_body(bob: UeSim, alice: UeSim) -> tuple[str, bytes]:
    """Alice sends one more MESSAGE, which Bob accepts; its Content-Type and body, to be sent
    again as a replay."""
    captured: list[Request] = []
    real_request = alice._request

    def capture(request: Request) -> Any:
        captured.append(request)
        return real_request(request)

    alice._request = capture  # type: ignore[method-assign]
    try:
        assert (await alice.im.send(bob.aor, "to be replayed")).status == 200
    finally:
        alice._request = real_request  # type: ignore[method-assign]
    assert (await bob.im.next_message()).text == "to be replayed"
    return captured[0].get("Content-Type") or "", captured[0].body


async def _answer(raw: _Raw, count: int) -> Response:
    for _ in range(200):
        if len(raw.responses) >= count:
            return raw.responses[count - 1]
        await task.deferLater(reactor, 0.02, lambda: None)
    raise AssertionError("no response")


@pytest_twisted.ensureDeferred
async def test_bad_messages_get_a_4xx_with_a_warning_and_bob_carries_on(
    ids: Any, keys: Any, kms: KmsService, gm: Any, cleanup: list[Any]
) -> None:
    alice = await _ue("alice", ids, keys, kms, gm, cleanup)
    bob = await _ue("bob", ids, keys, kms, gm, cleanup)
    # a genuine body, protected by Alice's UE, kept from Bob: the tampered copy is not a replay
    held: list[Request] = []

    def hold(request: Request) -> Any:
        held.append(request)
        return defer.succeed(make_response(request, 200))

    assert (await alice.im.send(bob.aor, "original")).status == 200
    await bob.im.next_message()
    real_request = alice._request
    alice._request = hold  # type: ignore[method-assign]
    await alice.im.send(bob.aor, "held back")
    alice._request = real_request  # type: ignore[method-assign]
    replay_ct, replay = await _last_body(bob, alice)
    genuine = held[0]
    ct, body = genuine.get("Content-Type") or "", genuine.body
    parts = mime.parse_multipart(ct, body)
    der = parts[1].body
    tampered_ct, tampered = mime.multipart(
        [parts[0], mime.Part(parts[1].headers, der[:-3] + bytes([der[-3] ^ 0x40]) + der[-2:])]
    )
    other_ct, other = mime.multipart(
        [parts[0], mime.smime_part(cms.seal(im.text_entity("x"), bytes(16), b"\x0a\x0b\x0c"))]
    )
    warnings: list[dict[str, Any]] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("log_namespace") == "lab.ue" and "refused" in event.get("log_format", ""):
            warnings.append(event)

    globalLogPublisher.addObserver(observe)
    cleanup.append(lambda: globalLogPublisher.removeObserver(observe))
    raw = _Raw()
    port = reactor.listenUDP(0, raw, interface="127.0.0.1")
    cleanup.append(port.stopListening)
    me = port.getHost().port
    cases = [
        ("replayed", replay_ct, replay, 403, "replayed"),
        ("tampered", tampered_ct, tampered, 403, "not the one the TRANSFER_INIT names"),
        ("oversized", ct, b"x" * (im.MAX_BODY_BYTES + 1), 413, "at most"),
        ("malformed MIME", "multipart/mixed; boundary=zz", b"--zz\r\nno end", 400, "MIME"),
        ("not multipart", "text/plain", b"hi", 415, "multipart/mixed"),
        ("wrong key id", other_ct, other, 493, "the body is for key id 0a0b0c"),
    ]
    for n, (name, ctype, data, status, words) in enumerate(cases, start=1):
        port.write(_message(bob.aor, ctype, data, me, n), ("127.0.0.1", bob.node.port))
        answer = await _answer(raw, n)
        assert answer.status == status, name
        warning = answer.get("Warning") or ""
        assert warning.startswith("399 ") and words in warning, (name, warning)
    assert [r.status for r in bob.im.refused] == [c[3] for c in cases]
    # each refusal is a warning log event naming the call and the reason
    assert [(e["call_id"], e["status"]) for e in warnings] == [
        (f"raw-{n}@127.0.0.1", c[3]) for n, c in enumerate(cases, start=1)
    ]
    assert all(e["log_level"].name == "warn" and e["error"] for e in warnings)
    assert (await alice.im.send(bob.aor, "still fine")).status == 200
    assert (await bob.im.next_message()).text == "still fine"


@pytest_twisted.ensureDeferred
async def test_the_key_log_opens_a_message_with_openssl_cms(
    ids: Any, keys: Any, kms: KmsService, gm: Any, cleanup: list[Any], tmp_path: Path
) -> None:
    """docs/messaging.md's recipe: the KEK line of the key log and openssl cms -decrypt."""
    openssl = require_tool("openssl")
    alice = await _ue("alice", ids, keys, kms, gm, cleanup, KeyLogWriter(tmp_path / "a.log"))
    bob = await _ue("bob", ids, keys, kms, gm, cleanup, KeyLogWriter(tmp_path / "b.log"))
    captured: list[Request] = []
    real_request = alice._request

    def capture(request: Request) -> Any:
        captured.append(request)
        return real_request(request)

    alice._request = capture  # type: ignore[method-assign]
    assert (await alice.im.send(bob.aor, "read me with openssl")).status == 200
    await bob.im.next_message()
    (sent,) = [line.split() for line in (tmp_path / "a.log").read_text().splitlines()]
    (got,) = [line.split() for line in (tmp_path / "b.log").read_text().splitlines()]
    assert sent == got and sent[0] == "E2AE_MIME_KEK"
    _, kek_id, kek = sent
    request = captured[0]
    (smime,) = [
        p
        for p in mime.parse_multipart(request.get("Content-Type") or "", request.body)
        if p.content_type == "application/pkcs7-mime"
    ]
    (tmp_path / "m.der").write_bytes(smime.body)
    out = subprocess.run(
        [
            openssl,
            "cms",
            "-decrypt",
            "-binary",
            "-inform",
            "DER",
            "-in",
            str(tmp_path / "m.der"),
            "-secretkey",
            kek,
            "-secretkeyid",
            kek_id,
        ],
        capture_output=True,
        check=True,
        timeout=30,
    )
    assert out.stdout == im.text_entity("read me with openssl")
    # and the recipe of docs/messaging.md, "Taking a message apart", as written there
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "001-x.sip").write_bytes(request.serialise())
    (tmp_path / "keys.log").write_text((tmp_path / "a.log").read_text())
    script = _doc_recipe().replace("<key id>", kek_id).replace("<KEK>", kek)
    done = subprocess.run(
        [
            "bash",
            "-euo",
            "pipefail",
            "-c",
            f'e2ae() {{ "{sys.executable}" -m lab.cli "$@"; }}\n' + script,
        ],
        cwd=tmp_path,
        capture_output=True,
        timeout=60,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    assert done.returncode == 0, done.stderr.decode()
    shown = done.stdout.decode()
    assert '"data_type": "TRANSFER_INIT"' in shown and '"ext_type": 240' in shown
    assert "id-smime-ct-authEnvelopedData" in shown and "id-aes128-wrap" in shown
    assert shown.rstrip().endswith("read me with openssl")


def _doc_recipe() -> str:
    """The first three shell blocks of docs/messaging.md, "Taking a message apart"."""
    text = (REPO / "docs" / "messaging.md").read_text()
    section = text.split("## Taking a message apart", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```\n(.*?)```", section, re.S)
    return "\n".join(blocks[:3])


# -- e2ae ue as real processes ---------------------------------------------------------------


def _cli_args(
    tmp: Path, kms: KmsService, ids: dict[str, certs.CertAndKey], keys: dict[str, bytes], name: str
) -> list[str]:
    cert, _ = certs.write(ids[name], tmp)
    (tmp / f"{name}.psk").write_text(keys[name].hex() + "\n")
    host, port = kms.address
    return [
        "--user",
        name,
        "--cert",
        str(cert.with_suffix("")),
        "--kms",
        f"{host}:{port}",
        "--kms-pin",
        str(ids["kms"].fingerprint()),
        "--kms-psk-file",
        str(tmp / f"{name}.psk"),
        "--json",
        "--timeout",
        "15",
    ]


@pytest_twisted.ensureDeferred
async def test_e2ae_ue_sends_and_receives_protected_messages(
    ids: Any, keys: Any, kms: KmsService, gm: Any, cleanup: list[Any], tmp_path: Path
) -> None:
    pcscf = f"{gm[0]}:{gm[1]}"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    bob = subprocess.Popen(
        [
            *e2ae_command(),
            "ue",
            "--pcscf",
            pcscf,
            "--receive-messages",
            "2",
            "--save-messages",
            str(tmp_path / "saved"),
            *_cli_args(tmp_path, kms, ids, keys, "bob"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
        env=env,
        text=True,
    )
    cleanup.append(lambda: bob.poll() is not None or (bob.kill(), bob.wait()))
    assert bob.stdout is not None
    first = await threads.deferToThread(bob.stdout.readline)
    assert first == f"ue bob registered {aor('bob')} (200)\n"
    alice = await threads.deferToThread(
        run_e2ae,
        [
            "ue",
            "--pcscf",
            pcscf,
            "--message-kms",
            aor("bob"),
            "--message",
            "hello bob",
            "--message",
            "and again",
            *_cli_args(tmp_path, kms, ids, keys, "alice"),
        ],
    )
    out = alice.stdout.decode().splitlines()
    assert alice.returncode == 0, out + alice.stderr.decode().splitlines()[-20:]
    sent = [json.loads(line) for line in out[1:]]
    assert [(s["message_to"], s["status"], s["ticket_reused"]) for s in sent] == [
        (aor("bob"), 200, False),
        (aor("bob"), 200, True),
    ]
    rest, _ = await threads.deferToThread(bob.communicate, timeout=30)
    assert bob.returncode == 0
    got = [json.loads(line) for line in rest.splitlines()]
    assert [(g["message_from"], g["protected_by"], g["text"]) for g in got] == [
        (aor("alice"), aor("alice"), "hello bob"),
        (aor("alice"), aor("alice"), "and again"),
    ]
    saved = sorted((tmp_path / "saved").iterdir())
    assert [p.name[:4] for p in saved] == ["001-", "002-"]
    first_saved = saved[0].read_bytes()
    assert first_saved.startswith(b"MESSAGE sip:bob@") and b"application/pkcs7-mime" in first_saved


def test_e2ae_ue_message_kms_needs_the_kms() -> None:
    got = run_e2ae(
        ["ue", "--pcscf", "127.0.0.1:5060", "--user", "alice", "--message-kms", "sip:b@x"]
    )
    assert got.returncode == 2
    assert got.stderr.decode().strip() == (
        "e2ae ue: --message-kms and --receive-messages need --kms"
    )
