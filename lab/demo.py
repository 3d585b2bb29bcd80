"""``e2ae demo``: a whole e2ae lab in one process on loopback, five scenarios, checked.

Fresh certificates in a temporary directory; a P-CSCF with the e2ae media handler and an Iq
controller; an AGW registered over Iq; the core stub; two UEs (alice, bob). Then:

1. alice calls bob through the same P-CSCF (originating and terminating e2ae): MSRP both ways,
   a BFCP floor request granted by bob;
2. alice calls the plain core peer (TCP/MSRP and TCP/BFCP in the core), which echoes;
3. an impostor with another certificate tries the AGW access port of alice's live MSRP stream
   of call 1 and must be refused;
4. with a KMS (in-process, its own fresh certificate, a key shared with each of alice, bob and
   carol, its state in the temporary directory) and UEs in KMS mode registered through the same
   P-CSCF: alice calls bob with keys from the KMS (MSRP both ways and a BFCP floor over TLS-PSK
   end to end, the P-CSCF passing the streams untouched, no AGW termination);
5. carol, who is not the ticket's responder, gets no key: an offer keyed for bob reaching her is
   answered 488, and her TLS-PSK at bob's live MSRP port fails.

Iq runs over mutual-certificate TLS, each end pinning the other's fresh certificate; before the
calls an Iq impostor (another certificate, the real AGW's mId) must be refused by the P-CSCF
and leave the registered AGW as it was. The P-CSCF and the AGW are put together as their own
commands put them together, by :func:`pcscf.service.build` and :func:`accessgw.service.build`;
:func:`run_demo` is the list of steps, one function each.

The call flow is printed from the elements' own log events (a log observer; nothing prints on
its own), one line per event, then a summary table. Every check comes from what happened: the
bytes the AGW relayed (its termination statistics) against the bytes each end counted, the
fingerprint verifications on both sides of each TLS leg (UE: the AGW's certificate against the
SDP; AGW: the UE's certificate against what the P-CSCF gave it over Iq), the AGW's refusal event
for the impostor. ``E2AE_DEMO_BREAK=agw-fingerprint`` makes the AGW announce a wrong fingerprint
over Iq (a test of the checks: the UEs must refuse it and the demo must fail);
``E2AE_DEMO_BREAK=kms-key`` gives bob another key than the one the KMS holds for him (his
RESOLVE is refused, he answers 488, the KMS call's checks fail, and so does the demo).
"""

from __future__ import annotations

import datetime
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

import attrs
from twisted.internet import defer
from twisted.logger import Logger, LogLevel, formatEvent, globalLogPublisher

import certs
from lab import media

log = Logger(namespace="lab.demo")

BREAK_ENV = "E2AE_DEMO_BREAK"
DOMAIN = "lab.example"

#: Log namespaces shown in the call flow, and the column label of each.
CATEGORIES: tuple[tuple[str, str], ...] = (
    ("lab.sip", "SIP"),
    ("pcscf.e2ae", "P-CSCF"),
    ("pcscf", "P-CSCF"),
    ("iq", "Iq"),
    ("accessgw", "AGW"),
    ("lab.media", "MEDIA"),
    ("lab.ue", "UE"),
    ("lab.core", "CORE"),
    ("lab.demo", "DEMO"),
    ("e2ae.kms", "KMS"),
    ("msrpas", "AS"),
)


def _category(namespace: str) -> str | None:
    for prefix, label in CATEGORIES:
        if namespace == prefix or namespace.startswith(prefix + "."):
            return label
    return None


@attrs.define
class FlowRecorder:
    """A log observer keeping the call flow: (seconds since start, label, text) per event."""

    start: float = attrs.field(factory=time.monotonic)
    lines: list[tuple[float, str, str]] = attrs.field(factory=list)
    events: list[dict[str, Any]] = attrs.field(factory=list)
    echo: IO[str] | None = None

    def __call__(self, event: dict[str, Any]) -> None:
        label = _category(str(event.get("log_namespace", "")))
        level = event.get("log_level")
        if label is None or level is None or level < LogLevel.info:
            return
        fmt = str(event.get("log_format") or "")
        if fmt.startswith(("Starting factory", "Stopping factory")):
            return
        text = formatEvent(event).replace("\n", " | ")
        if event.get("log_failure") is not None:
            text += f" ({event['log_failure'].getErrorMessage()})"
        self.events.append(event)
        line = (time.monotonic() - self.start, label, text)
        self.lines.append(line)
        if self.echo is not None:
            print(f"{line[0]:7.3f}  {line[1]:<6} {line[2]}", file=self.echo, flush=True)


@attrs.define
class Check:
    name: str
    ok: bool
    detail: str = ""


@attrs.define
class DemoResult:
    calls: list[dict[str, Any]] = attrs.field(factory=list)
    checks: list[Check] = attrs.field(factory=list)
    impostor_refused: bool = False
    iq_impostor_refused: bool = False
    #: The KMS scenarios (None until they ran): see :func:`_kms_call` and :func:`_kms_stranger`.
    kms: dict[str, Any] | None = None
    error: str | None = None
    #: the P-CSCF's Iq port (for the decode-as option of a capture)
    iq_port: int | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.checks) and all(c.ok for c in self.checks)

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.checks.append(Check(name, bool(ok), detail))
        return bool(ok)

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "calls": self.calls,
            "impostor_refused": self.impostor_refused,
            "iq_impostor_refused": self.iq_impostor_refused,
            "checks": [attrs.asdict(c) for c in self.checks],
            "error": self.error,
            "kms": self.kms,
        }


class _AgwWatch:
    """AGW events by kind (the gateway's observer)."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    def __call__(self, event: Any) -> None:
        self.events.append(event)

    def of(self, kind: str) -> list[Any]:
        return [e for e in self.events if type(e).__name__ == kind]


async def _wait(reactor: Any, predicate: Any, timeout: float = 5.0) -> bool:
    deadline = reactor.seconds() + timeout
    while not predicate():
        if reactor.seconds() > deadline:
            return False
        d: defer.Deferred[None] = defer.Deferred()
        reactor.callLater(0.02, d.callback, None)
        await d
    return True


@attrs.define
class _Lab:
    """What the demo's steps share: the fresh identities, the running elements, the result, and
    what to stop at the end (last started, first stopped)."""

    reactor: Any
    workdir: Path
    result: DemoResult
    recorder: FlowRecorder | None
    #: name -> certificate and key, and the files they were written to
    ids: dict[str, certs.CertAndKey]
    files: dict[str, tuple[Path, Path]]
    keylog: media.KeyLogWriter
    watch: _AgwWatch = attrs.field(factory=_AgwWatch)
    stops: list[Any] = attrs.field(factory=list)
    core: Any = None
    pcscf: Any = None
    agw: Any = None
    alice: Any = None
    bob: Any = None
    kms: Any = None
    #: the UEs in KMS mode, by name, and the key each shares with the KMS
    kms_ues: dict[str, Any] = attrs.field(factory=dict)
    kms_keys: dict[str, bytes] = attrs.field(factory=dict, repr=False)
    #: the live KMS call (caller's and callee's side) while the stranger scenario runs
    kms_call: tuple[Any, Any] | None = None


async def run_demo(
    reactor: Any,
    workdir: Path,
    result: DemoResult,
    recorder: FlowRecorder | None = None,
    keylog: Path | None = None,
) -> None:
    """The demo's steps in order, each adding its checks to ``result``; whatever happens,
    everything started is stopped at the end. ``keylog``: the NSS key log of every TLS
    session (access legs, Iq, TLS-PSK media; default ``keys.log`` in ``workdir``)."""
    lab = _make_lab(reactor, workdir, result, recorder, keylog or workdir / "keys.log")
    try:
        _start_core(lab)
        _start_pcscf(lab)
        await _start_agw(lab)
        await _iq_impostor(lab)
        await _register_ues(lab)
        await _call_ue_to_ue(lab)
        await _call_core_peer(lab)
        await _check_released(lab)
        _start_kms(lab)
        await _register_kms_ues(lab)
        await _kms_call(lab)
        await _kms_stranger(lab)
        await _kms_hangup(lab)
        await _kms_via_as(lab)
        await _immediate_messages(lab)
        await _conference(lab)
    finally:
        await _stop(lab)


def _make_lab(
    reactor: Any, workdir: Path, result: DemoResult, recorder: FlowRecorder | None, keylog: Path
) -> _Lab:
    """Fresh certificates for every party, written to ``workdir``."""
    now = datetime.datetime.now(datetime.UTC)
    names = ("agw", "alice", "bob", "impostor", "pcscf-iq", "agw-iq")
    ids = {n: certs.generate(n, now=now) for n in names}
    files = {n: certs.write(pair, workdir) for n, pair in ids.items()}
    return _Lab(reactor, workdir, result, recorder, ids, files, media.KeyLogWriter(keylog))


def _start_core(lab: _Lab) -> None:
    """The core stub: the S-CSCF the P-CSCF forwards to, and a plain peer that echoes."""
    from lab.core import CoreStub

    lab.core = CoreStub(lab.reactor, domain=DOMAIN, echo=True)
    lab.core.listen()
    lab.stops.append(lab.core.stop)


def _start_pcscf(lab: _Lab) -> None:
    """The P-CSCF with the e2ae media handler; Iq over mutual TLS, the AGW's certificate
    pinned."""
    from pcscf.config import PcscfConfig
    from pcscf.policy import Policy
    from pcscf.service import build

    config = PcscfConfig(
        gm=("127.0.0.1", 0),
        core=("127.0.0.1", 0),
        next_hop=("127.0.0.1", lab.core.port),
        iq=("127.0.0.1", 0),
        iq_tls=lab.files["pcscf-iq"],
        iq_peers=(lab.ids["agw-iq"].fingerprint("sha-256").value,),
        iq_keylog=lab.keylog.path,
        policy=Policy(),
    )
    lab.pcscf = build(config, reactor=lab.reactor)
    lab.pcscf.startService()
    lab.result.iq_port = lab.pcscf.iq[1]
    lab.stops.append(lab.pcscf.stopService)


async def _start_agw(lab: _Lab) -> None:
    """The AGW, registered with the P-CSCF over Iq (mutual TLS, the P-CSCF's certificate
    pinned). ``E2AE_DEMO_BREAK=agw-fingerprint`` makes it announce a wrong fingerprint."""
    from accessgw.config import AgwConfig
    from accessgw.service import build
    from iq.config import IqTlsConfig

    cert, key = lab.files["agw"]
    config = AgwConfig(
        alg=lab.pcscf.iq,
        access_ip="127.0.0.1",
        core_ip="127.0.0.1",
        cert=cert,
        key=key,
        keylog=lab.keylog.path,
        mid="agw1",
        malloc_tuning=False,
    )
    iq_tls = IqTlsConfig(
        lab.ids["agw-iq"], (lab.ids["pcscf-iq"].fingerprint("sha-256"),), lab.keylog.path
    )
    lab.agw = build(
        config, iq_tls=iq_tls, identity=lab.ids["agw"], observer=lab.watch, reactor=lab.reactor
    )
    if os.environ.get(BREAK_ENV) == "agw-fingerprint":
        wrong = lab.ids["impostor"]
        lab.agw.gateway.fingerprint = lambda hash_func=None: wrong.fingerprint(
            hash_func or "sha-256"
        )
    lab.agw.startService()
    lab.stops.append(lab.agw.stopService)
    await lab.agw.when_registered().addTimeout(5, lab.reactor)
    lab.result.check(
        "AGW registered over Iq (mutual TLS, pinned certificates)",
        lab.pcscf.controller.gateways_in_service() == ["agw1"],
    )


async def _iq_impostor(lab: _Lab) -> None:
    """An Iq peer with an unpinned certificate, claiming the real AGW's mId, is refused."""
    from iq.config import IqTlsConfig
    from iq.link import IqAgent

    result, controller = lab.result, lab.pcscf.controller
    log.info("impostor: an Iq peer with another certificate registers as agw1")
    before = controller.unverified_links
    fake = IqAgent(
        None,
        "127.0.0.1",
        lab.pcscf.iq[1],
        mid="agw1",
        tls=IqTlsConfig(lab.ids["impostor"], (lab.ids["pcscf-iq"].fingerprint("sha-256"),)),
        reactor=lab.reactor,
        backoff_initial=30.0,
    )
    fake.start()
    try:
        refused = await _wait(lab.reactor, lambda: controller.unverified_links > before)
    finally:
        await defer.maybeDeferred(fake.stop)
    result.iq_impostor_refused = (
        refused and fake.registrations == 0 and controller.gateways_in_service() == ["agw1"]
    )
    result.check(
        "Iq impostor refused by the P-CSCF (certificate not pinned), agw1 still in service",
        result.iq_impostor_refused,
    )


async def _register_ues(lab: _Lab) -> None:
    """alice and bob register with the P-CSCF, asking for e2ae on MSRP and BFCP."""
    from lab.uesim import UeSim

    gm = lab.pcscf.gm
    lab.alice = UeSim(lab.reactor, "alice", lab.ids["alice"], gm, domain=DOMAIN, keylog=lab.keylog)
    lab.bob = UeSim(lab.reactor, "bob", lab.ids["bob"], gm, domain=DOMAIN, keylog=lab.keylog)
    for u in (lab.alice, lab.bob):
        await u.start()
        lab.stops.append(u.stop)
        reg = await u.register()
        lab.result.check(
            f"{u.user} registered with msrp-tls and bfcp-tls",
            reg.status == 200
            and u.ua is not None
            and {"msrp-tls", "bfcp-tls"} <= u.ua.network_mechanisms,
            f"{reg.status}",
        )


async def _impostor_at_live_port(lab: _Lab, call: Any) -> None:
    """Scenario 3 (while call 1 is being set up): the impostor, at the AGW access port of
    alice's MSRP stream, reserved and waiting for alice."""
    result, reactor, watch = lab.result, lab.reactor, lab.watch
    target = call.streams["msrp"].action
    log.info(
        "impostor: another certificate at the AGW access port {peer} of alice's MSRP "
        "stream, before alice connects",
        peer=f"{target.host}:{target.port}",
    )
    impostor = media.msrp_endpoint(
        reactor,
        local_uri="msrps://127.0.0.1:9/impostor;tcp",
        tls=media.UeTls(lab.ids["impostor"], target.pinned),
    )
    lab.stops.append(impostor.stop)
    received = 0
    try:
        conn = await impostor.connect(target.host or "127.0.0.1", target.port, timeout=5)
        await conn.when_closed().addTimeout(5, reactor)
        received = conn.bytes_received
    except Exception as exc:
        log.info("impostor: connection ended ({error})", error=str(exc))
    await _wait(reactor, lambda: bool(watch.of("TlsFailure")))
    failures = watch.of("TlsFailure")
    result.impostor_refused = bool(failures) and received == 0
    result.check(
        "impostor refused by the AGW (another certificate than alice's SDP fingerprint)",
        result.impostor_refused,
        ", ".join(f"{f.cause} from {f.peer}" for f in failures) or "no refusal event",
    )
    e2ae = lab.pcscf.e2ae
    told = await _wait(reactor, lambda: e2ae.table.stranger_failures >= 1)
    result.check("the P-CSCF heard of the refusal over Iq (Notify)", told)


async def _call_ue_to_ue(lab: _Lab) -> None:
    """Scenario 1: alice calls bob through the same P-CSCF (originating and terminating
    e2ae); MSRP both ways, a BFCP floor granted by bob, then BYE."""
    result, reactor, alice, bob = lab.result, lab.reactor, lab.alice, lab.bob

    async def impostor_first(call: Any) -> None:
        await _impostor_at_live_port(lab, call)

    incoming = bob.next_call()
    call1 = await alice.call(f"sip:bob@{DOMAIN}", before_media=impostor_first)
    answered = await incoming.addTimeout(10, reactor)
    await call1.msrp.send_message(b"Hello Bob, this travels over e2ae TLS.")
    got = await answered.msrp.wait_messages(1).addTimeout(5, reactor)
    await answered.msrp.send_message(b"Hi Alice, and back.")
    back = await call1.msrp.wait_messages(1).addTimeout(5, reactor)
    grant = await call1.bfcp.request_floor(1).addTimeout(5, reactor)
    result.check(
        "call 1: MSRP both ways (alice got in after the impostor was refused)",
        got[0].body.startswith(b"Hello Bob") and back[0].body.startswith(b"Hi Alice"),
    )
    result.check("call 1: BFCP floor granted", grant.floor_ids == (1,))

    await _tls_verified_at_pcscf(reactor, result, lab.recorder, call1.call_id, 4, "call 1")
    protos1 = next((r.protos for r in lab.core.routed if r.call_id == call1.call_id), ())
    gateway = lab.agw.gateway
    result.calls.append(
        _call_summary(result, "call 1", alice, call1, protos1, gateway, lab.watch, answered)
    )
    bye = await alice.hangup(call1)
    result.check("call 1: BYE answered 200", bye.status == 200, str(bye.status))
    await answered.when_ended().addTimeout(5, reactor)


async def _call_core_peer(lab: _Lab) -> None:
    """Scenario 2: alice calls the plain core peer (TCP/MSRP and TCP/BFCP in the core), which
    echoes; the bytes the AGW relayed against the bytes the peer counted; then BYE."""
    result, reactor, alice, core = lab.result, lab.reactor, lab.alice, lab.core
    call2 = await alice.call(core.peer_uri)
    await call2.msrp.send_message(b"Hello plain core.")
    echo = await call2.msrp.wait_messages(1).addTimeout(5, reactor)
    grant2 = await call2.bfcp.request_floor(1).addTimeout(5, reactor)
    peer = core.peer_calls.get(call2.call_id)
    result.check(
        "call 2: the core peer got the message and echoed it",
        peer is not None
        and [m.body for m in peer.messages] == [b"Hello plain core."]
        and echo[0].body == b"echo: Hello plain core.",
    )
    result.check("call 2: BFCP floor granted by the core", grant2.floor_ids == (1,))
    await _tls_verified_at_pcscf(reactor, result, lab.recorder, call2.call_id, 2, "call 2")
    summary2 = _call_summary(
        result,
        "call 2",
        alice,
        call2,
        peer.protos if peer else (),
        lab.agw.gateway,
        lab.watch,
        None,
    )
    if peer is not None and peer.msrp is not None:
        msrp_stream = summary2["streams"][0]
        result.check(
            "call 2: bytes the AGW relayed = bytes the core peer counted",
            msrp_stream["bytes_to_core"] == peer.msrp.bytes_received
            and msrp_stream["bytes_to_ue"] == peer.msrp.bytes_sent,
            f"{msrp_stream['bytes_to_core']}/{peer.msrp.bytes_received}",
        )
    result.calls.append(summary2)
    bye2 = await alice.hangup(call2)
    result.check("call 2: BYE answered 200", bye2.status == 200, str(bye2.status))


async def _check_released(lab: _Lab) -> None:
    """After the BYEs the AGW holds no termination (waited for: the releases are Iq round
    trips that may still be on their way)."""
    gateway = lab.agw.gateway
    await _wait(lab.reactor, lambda: not gateway.terminations)
    lab.result.check(
        "every AGW termination released after the BYEs",
        not gateway.terminations,
        ", ".join(gateway.terminations),
    )


KMS_USERS = ("alice", "bob", "carol")
#: The callee of the scenario through the MSRP AS (the core routes his calls through it).
AS_USER = "dave"
AS_IDENTITY = f"sip:msrp-as@{DOMAIN}"
#: Immediate messaging: the list server's identity, the group PSI it serves, its members and
#: the member who is not registered when the messages are sent.
LIST_USER = "lists"
LIST_IDENTITY = f"sip:{LIST_USER}@{DOMAIN}"
LIST_PSI = f"sip:friends@{DOMAIN}"
OFFLINE_USER = "erin"
LIST_MEMBERS = ("bob", "carol", OFFLINE_USER)
#: Conferencing: the MRFC's identity at the KMS and the conference URI it hosts.
MRFC_USER = "mrfc"
MRFC_IDENTITY = f"sip:{MRFC_USER}@{DOMAIN}"
CONFERENCE_URI = f"sip:conf1@{DOMAIN}"


def _start_kms(lab: _Lab) -> None:
    """The KMS, in-process over HTTPS: a fresh certificate of its own, a fresh key shared with
    each of alice, bob and carol (``NAME.psk`` in hex), its state file; all in ``workdir``.
    Each user may connect with the certificate of its UE. ``E2AE_DEMO_BREAK=kms-key`` gives
    bob's UE another key than the one the KMS holds for him."""
    from kms.config import KmsConfig, ProvisionedUser
    from kms.service import build
    from kms.store import User
    from lab.ue import KMS_IDENTITY

    now = datetime.datetime.now(datetime.UTC)
    for name in ("kms", "carol", AS_USER, "msrp-as", LIST_USER, OFFLINE_USER, MRFC_USER, "mrfp"):
        lab.ids[name] = certs.generate(name, now=now)
        lab.files[name] = certs.write(lab.ids[name], lab.workdir)
    provisioned = []
    for name in (*KMS_USERS, AS_USER, "msrp-as", LIST_USER, OFFLINE_USER, MRFC_USER):
        key = os.urandom(16)
        path = lab.workdir / f"{name}.psk"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(key.hex() + "\n")
        lab.kms_keys[name] = key
        # the list server may resolve tickets that name the group it serves
        groups = {LIST_USER: (LIST_PSI,), MRFC_USER: (CONFERENCE_URI,)}.get(name, ())
        user = User(f"sip:{name}@{DOMAIN}", key, groups)
        provisioned.append(ProvisionedUser(user, (lab.ids[name].fingerprint(),)))
    cert, key_file = lab.files["kms"]
    config = KmsConfig(
        identity=KMS_IDENTITY,
        listen=("127.0.0.1", 0),
        cert=cert,
        key=key_file,
        state=lab.workdir / "kms.sqlite",
        users=tuple(provisioned),
    )
    lab.kms = build(config, identity=lab.ids["kms"], reactor=lab.reactor)
    lab.kms.startService()
    lab.stops.append(lab.kms.stopService)
    if os.environ.get(BREAK_ENV) == "kms-key":
        lab.kms_keys["bob"] = os.urandom(16)


async def _register_kms_ues(lab: _Lab) -> None:
    """alice, bob and carol in KMS mode register through the same P-CSCF (the newest
    registration of an AOR is the one the core routes to)."""
    from lab.ue import KmsAccess
    from lab.uesim import UeSim

    log.info(
        "kms: KMS {kms} at {address}, users alice, bob, carol; their UEs in KMS mode register",
        kms=lab.kms.config.identity,
        address="{}:{}".format(*lab.kms.address),
    )
    for name in KMS_USERS:
        access = KmsAccess(
            lab.kms.address,
            lab.ids["kms"].fingerprint(),
            lab.kms_keys[name],
            cert_files=lab.files[name],
            timeout=5.0,
            app_servers=(AS_IDENTITY,) if name == "alice" else (),
        )
        sim = UeSim(
            lab.reactor,
            name,
            lab.ids[name],
            lab.pcscf.gm,
            domain=DOMAIN,
            keylog=lab.keylog,
            media_timeout=5.0,
            kms=access,
        )
        await sim.start()
        lab.stops.append(sim.stop)
        reg = await sim.register()
        lab.result.check(f"kms: {name} registered in KMS mode", reg.status == 200, f"{reg.status}")
        lab.kms_ues[name] = sim
    lab.result.kms = {
        "kms": lab.kms.config.identity,
        "users": [f"sip:{n}@{DOMAIN}" for n in KMS_USERS],
        "ok": False,
        "scenarios": [],
    }


def _kms_scenario(lab: _Lab, name: str, **fields: Any) -> dict[str, Any]:
    assert lab.result.kms is not None
    scenario: dict[str, Any] = {"name": name, "ok": True, **fields, "checks": []}
    lab.result.kms["scenarios"].append(scenario)
    return scenario


def _kms_check(lab: _Lab, scenario: dict[str, Any], name: str, ok: bool, detail: str = "") -> bool:
    """A check of a KMS scenario: in the scenario's JSON and in the demo's checks."""
    ok = lab.result.check(f"{scenario['name']}: {name}", ok, detail)
    scenario["checks"].append({"name": name, "ok": ok, "detail": detail})
    scenario["ok"] = scenario["ok"] and ok
    assert lab.result.kms is not None
    scenarios = lab.result.kms["scenarios"]
    lab.result.kms["ok"] = bool(scenarios) and all(s["ok"] for s in scenarios)
    return ok


def _tls_of(leg: Any) -> tuple[str | None, str | None]:
    conn = leg.connection
    if conn is None or conn.transport is None:
        return None, None
    handle = conn.transport.getHandle()
    return handle.get_protocol_version_name(), handle.get_cipher_name()


async def _chat_and_floor(
    reactor: Any, call: Any, answered: Any, hello: bytes, reply: bytes
) -> tuple[bool, bool]:
    """The caller sends ``hello``, the callee ``reply``, the caller asks for floor 1: whether
    each message arrived whole, and whether the floor was granted."""
    await call.msrp.send_message(hello)
    got = await answered.msrp.wait_messages(1).addTimeout(5, reactor)
    await answered.msrp.send_message(reply)
    back = await call.msrp.wait_messages(1).addTimeout(5, reactor)
    grant = await call.bfcp.request_floor(1).addTimeout(5, reactor)
    return got[0].body == hello and back[0].body == reply, grant.floor_ids == (1,)


async def _kms_call(lab: _Lab) -> None:
    """Scenario 4: alice calls bob with keys from the KMS; MSRP both ways and a BFCP floor
    over TLS-PSK end to end; the P-CSCF classes both streams e2e and passes offer and answer
    byte for byte; the AGW makes no termination. The call stays up for scenario 5."""
    from certs.psk import ALLOWED_PSK_CIPHERS
    from lab.uesim import CallFailed
    from pcscf.policy import Policy
    from pcscf.rewrite import plan_offer
    from pcscf.sdp import SessionDescription

    reactor, alice, bob = lab.reactor, lab.kms_ues["alice"], lab.kms_ues["bob"]
    scenario = _kms_scenario(lab, "kms call", **{"from": alice.aor, "to": bob.aor})
    log.info("kms: alice calls bob with keys from the KMS (TLS-PSK end to end, no AGW)")
    agw_events = len(lab.watch.events)
    incoming = bob.next_call()
    try:
        call = await defer.Deferred.fromCoroutine(alice.call(bob.aor)).addTimeout(15, reactor)
    except CallFailed as exc:
        scenario.update(call_id=exc.call_id, status=exc.status)
        _kms_check(lab, scenario, "bob answered 200 with his TRANSFER_RESP", False, str(exc))
        return
    answered = await incoming.addTimeout(10, reactor)
    lab.kms_call = (call, answered)
    scenario.update(call_id=call.call_id, status=200)
    _kms_check(lab, scenario, "bob answered 200 with his TRANSFER_RESP", True, "200")
    scenario["kms_exchanges"] = {"alice": [*alice.kms_exchanges], "bob": [*bob.kms_exchanges]}
    _kms_check(
        lab,
        scenario,
        "alice got a ticket for bob, bob had the KMS resolve it",
        alice.kms_exchanges == ["REQUEST_INIT_PSK"] and bob.kms_exchanges == ["RESOLVE_INIT_PSK"],
        f"alice {alice.kms_exchanges}, bob {bob.kms_exchanges}",
    )

    both_ways, floor = await _chat_and_floor(
        reactor, call, answered, b"Hello Bob, keyed by the KMS.", b"Hi Alice, keyed by the KMS too."
    )
    _kms_check(lab, scenario, "MSRP both ways over TLS-PSK", both_ways)
    _kms_check(lab, scenario, "BFCP floor granted over TLS-PSK", floor)

    plan = plan_offer(
        "orig-offer", SessionDescription.parse(answered.offer), ("msrp-tls", "bfcp-tls"), Policy()
    )
    scenario["treatment"] = [s.treatment for s in plan.streams]
    scenario["sdp_untouched"] = answered.offer == call.offer and call.answer == answered.answer
    protos = next((r.protos for r in lab.core.routed if r.call_id == call.call_id), ())
    _kms_check(
        lab,
        scenario,
        "the P-CSCF classed both streams e2e",
        scenario["treatment"] == ["e2e", "e2e"],
        ", ".join(scenario["treatment"]),
    )
    _kms_check(
        lab,
        scenario,
        "offer and answer passed the P-CSCF byte for byte (TLS in the core too)",
        scenario["sdp_untouched"] and protos == ("TCP/TLS/MSRP", "TCP/TLS/BFCP"),
        ", ".join(protos),
    )
    # terminations the AGW has, or told of since the call began, that earlier calls did not have
    earlier = {getattr(e, "termination", None) for e in lab.watch.events[:agw_events]}
    since = {getattr(e, "termination", None) for e in lab.watch.events[agw_events:]}
    new_terminations = sorted(str(t) for t in since - earlier) + lab.agw.gateway.terminations
    held = [d for d in lab.pcscf.e2ae.table.held() if d.call_id == call.call_id]
    scenario["agw_terminations"] = len(new_terminations)
    _kms_check(
        lab,
        scenario,
        "no AGW termination for this call (none at the AGW, none held by the P-CSCF)",
        not new_terminations and not held,
        f"{len(new_terminations)} at the AGW, {len(held)} held",
    )

    streams: list[dict[str, Any]] = []
    for kind in ("msrp", "bfcp"):
        mine, theirs = call.streams[kind], answered.streams[kind]
        version, cipher = _tls_of(mine)
        far_version, far_cipher = _tls_of(theirs)
        keys_match = bool(
            mine.tls_psk and theirs.tls_psk and mine.endpoint.tls.psk == theirs.endpoint.tls.psk
        )
        stream = {
            "media": mine.action.media,
            "proto": mine.proto,
            "cs_id": mine.action.cs_id,
            "tls_psk": mine.tls_psk and theirs.tls_psk,
            "tls_version": version,
            "cipher": cipher,
            "keys_match": keys_match,
            "bytes_sent": mine.connection.bytes_sent,
            "bytes_received": mine.connection.bytes_received,
        }
        streams.append(stream)
        _kms_check(
            lab,
            scenario,
            f"{kind}: TLS-PSK at both ends, the same key (crypto session {mine.action.cs_id})",
            keys_match and mine.verified_fingerprint is None,
        )
        _kms_check(
            lab,
            scenario,
            f"{kind}: TLS 1.2 with a PSK suite, the same at both ends",
            version == far_version == "TLSv1.2"
            and cipher == far_cipher
            and cipher in ALLOWED_PSK_CIPHERS,
            f"{version}, {cipher}",
        )
        _kms_check(
            lab,
            scenario,
            f"{kind}: what alice sent reached bob, and back",
            mine.connection.bytes_sent == theirs.connection.bytes_received > 0
            and theirs.connection.bytes_sent == mine.connection.bytes_received > 0,
            f"{mine.connection.bytes_sent}/{theirs.connection.bytes_received}",
        )
    scenario["streams"] = streams
    msrp_psk, bfcp_psk = (call.streams[k].endpoint.tls.psk for k in ("msrp", "bfcp"))
    _kms_check(lab, scenario, "each stream has its own key", msrp_psk != bfcp_psk)


async def _kms_stranger(lab: _Lab) -> None:
    """Scenario 5: carol is not the ticket's responder and gets no key. alice's offer keyed
    for bob (ticket and TRANSFER_INIT naming bob) sent to carol is answered 488 before carol
    asks the KMS; then carol, holding no key of the live call, tries TLS-PSK at bob's MSRP
    port and fails, and bob keeps only alice's connection."""
    from lab.media import UePsk, msrp_endpoint
    from lab.uesim import CallFailed
    from mikey.transfer import TLS_PSK_BYTES

    reactor, alice, bob, carol = (lab.reactor, *(lab.kms_ues[n] for n in KMS_USERS))
    scenario = _kms_scenario(
        lab, "carol", **{"from": alice.aor, "to": carol.aor, "keyed_for": bob.aor}
    )
    log.info("kms: alice's offer keyed for bob goes to carol")
    honest = alice.kms
    alice.kms = attrs.evolve(honest, responder=bob.aor)
    status: int | None = None
    warning = ""
    try:
        await defer.Deferred.fromCoroutine(alice.call(carol.aor)).addTimeout(15, reactor)
    except CallFailed as exc:
        status = exc.status
        found = re.search(r'\(399 [^ ]+ "([^"]*)"\)$', str(exc))
        warning = found.group(1) if found else str(exc)
    finally:
        alice.kms = honest
    scenario.update(status=status, warning=warning, kms_exchanges=[*carol.kms_exchanges])
    expected = f"INVALID_ID: the TRANSFER_INIT is for {bob.aor}"
    _kms_check(
        lab,
        scenario,
        "the offer keyed for bob answered 488 with its Warning",
        status == 488 and warning == expected,
        f"{status} {warning}",
    )
    _kms_check(
        lab,
        scenario,
        "carol never asked the KMS and has no call",
        carol.kms_exchanges == [] and not carol.calls,
        f"{carol.kms_exchanges}",
    )

    if lab.kms_call is None:
        scenario["tls_refused"] = False
        _kms_check(lab, scenario, "her TLS-PSK at bob's MSRP port fails", False, "no live call")
        return
    call, answered = lab.kms_call
    target = call.streams["msrp"].action
    bob_side = answered.streams["msrp"].endpoint
    log.info(
        "kms: carol, without the call's key, tries TLS-PSK at bob's MSRP port {peer}",
        peer=f"{target.host}:{target.port}",
    )
    refused_before, connections_before = len(bob_side.refused), len(bob_side.connections)
    stranger = msrp_endpoint(
        reactor,
        local_uri="msrps://127.0.0.1:9/carol;tcp",
        tls=UePsk(os.urandom(TLS_PSK_BYTES)),
        call_id=call.call_id,
    )
    lab.stops.append(stranger.stop)
    connected = False
    try:
        await stranger.connect(target.host or "127.0.0.1", target.port).addTimeout(5, reactor)
        connected = True
    except Exception as exc:
        log.info("kms: carol's TLS-PSK ended ({error})", error=str(exc) or type(exc).__name__)
    await _wait(reactor, lambda: len(bob_side.refused) > refused_before)
    verified = [c for c in bob_side.connections[connections_before:] if c.verified]
    scenario["tls_refused"] = (
        not connected and len(bob_side.refused) > refused_before and not verified
    )
    _kms_check(
        lab,
        scenario,
        "her TLS-PSK at bob's MSRP port fails (bob refused the handshake)",
        scenario["tls_refused"],
        ", ".join(str(r) for r in bob_side.refused[refused_before:]) or "no refusal",
    )
    await call.msrp.send_message(b"Still here, Bob?")
    still = await answered.msrp.wait_messages(2).addTimeout(5, reactor)
    _kms_check(
        lab,
        scenario,
        "alice's stream to bob still carries messages",
        still[-1].body == b"Still here, Bob?",
    )


async def _kms_hangup(lab: _Lab) -> None:
    """The KMS call ends with alice's BYE."""
    if lab.kms_call is None or lab.result.kms is None:
        return
    call, answered = lab.kms_call
    scenario = lab.result.kms["scenarios"][0]
    bye = await lab.kms_ues["alice"].hangup(call)
    _kms_check(lab, scenario, "BYE answered 200", bye.status == 200, str(bye.status))
    await answered.when_ended().addTimeout(5, lab.reactor)
    lab.kms_call = None


async def _kms_via_as(lab: _Lab) -> None:
    """Scenario 6: alice calls dave, whose calls the core routes through the MSRP AS
    (``e2ae msrp-as``): the AS resolves alice's ticket, re-originates the Ticket Transfer with
    a ticket of its own and terminates TLS-PSK on both legs; both ends learn from MIKEY that
    TLS ends in the AS (policy accept) and MSRP and BFCP pass through it."""
    from lab.ue import KmsAccess
    from lab.uesim import CallFailed, UeSim
    from msrpas.service import AsConfig, KmsLink
    from msrpas.service import build as build_as

    if lab.result.kms is None or lab.kms is None or lab.core is None:
        return
    reactor, alice = lab.reactor, lab.kms_ues["alice"]
    cert, key_file = lab.files["msrp-as"]
    app = build_as(
        AsConfig(
            sip=("127.0.0.1", 0),
            next_hop=("127.0.0.1", lab.core.port),
            media_ip="127.0.0.1",
            identity=AS_IDENTITY,
            kms=KmsLink(
                lab.kms.address,
                lab.ids["kms"].fingerprint(),
                lab.kms_keys["msrp-as"],
                cert,
                key_file,
            ),
            setup_timeout=5.0,
            keylog=None,
        ),
        reactor=reactor,
    )
    app.startService()
    lab.stops.append(app.stopService)
    dave_aor = f"sip:{AS_USER}@{DOMAIN}"
    lab.core.app_server = app.address
    lab.core.app_server_for = frozenset({dave_aor})
    access = KmsAccess(
        lab.kms.address,
        lab.ids["kms"].fingerprint(),
        lab.kms_keys[AS_USER],
        cert_files=lab.files[AS_USER],
        timeout=5.0,
    )
    dave = UeSim(
        reactor,
        AS_USER,
        lab.ids[AS_USER],
        lab.pcscf.gm,
        domain=DOMAIN,
        keylog=lab.keylog,
        media_timeout=5.0,
        kms=access,
    )
    await dave.start()
    lab.stops.append(dave.stop)
    scenario = _kms_scenario(
        lab, "via AS", **{"from": alice.aor, "to": dave_aor, "app_server": AS_IDENTITY}
    )
    reg = await dave.register()
    _kms_check(lab, scenario, "dave registered in KMS mode", reg.status == 200, str(reg.status))
    log.info("kms: alice calls dave; the core routes it through the MSRP AS (TLS-PSK hop by hop)")
    incoming = dave.next_call()
    try:
        call = await defer.Deferred.fromCoroutine(alice.call(dave_aor)).addTimeout(15, reactor)
    except CallFailed as exc:
        _kms_check(lab, scenario, "the AS answered 200 with its TRANSFER_RESP", False, str(exc))
        return
    answered = await incoming.addTimeout(10, reactor)
    scenario.update(call_id=call.call_id, callee_call_id=answered.call_id, status=200)
    _kms_check(lab, scenario, "the AS answered 200 with its TRANSFER_RESP", True, "200")
    scenario["as_kms_exchanges"] = [*app.kms_exchanges]
    _kms_check(
        lab,
        scenario,
        "the AS resolved alice's ticket and got one of its own for dave",
        app.kms_exchanges == ["RESOLVE_INIT_PSK", "REQUEST_INIT_PSK"],
        ", ".join(app.kms_exchanges),
    )
    scenario["tls_terminated_by"] = {
        "alice": call.tls_terminated_by,
        "dave": answered.tls_terminated_by,
    }
    _kms_check(
        lab,
        scenario,
        "both ends were told TLS-PSK ends in the AS",
        call.tls_terminated_by == AS_IDENTITY and answered.tls_terminated_by == AS_IDENTITY,
        f"alice {call.tls_terminated_by}, dave {answered.tls_terminated_by}",
    )
    both_ways, floor = await _chat_and_floor(
        reactor, call, answered, b"Hello Dave, through the AS.", b"Hi Alice, through the AS too."
    )
    _kms_check(lab, scenario, "MSRP both ways through the AS, TLS-PSK on each leg", both_ways)
    _kms_check(lab, scenario, "BFCP floor granted through the AS", floor)
    bye = await alice.hangup(call)
    _kms_check(lab, scenario, "BYE answered 200", bye.status == 200, str(bye.status))
    await answered.when_ended().addTimeout(5, reactor)
    _kms_check(lab, scenario, "the AS holds no call", await _wait(reactor, lambda: not app.calls))


def _start_list_server(lab: _Lab) -> Any:
    """``e2ae list-server`` in process for the PSI ``LIST_PSI``; the core routes that PSI to
    it and tells it of every registration (third-party REGISTER)."""
    from listserver.config import Group, KmsLink, ListServerConfig
    from listserver.service import build as build_list_server

    assert lab.kms is not None and lab.core is not None
    cert, key_file = lab.files[LIST_USER]
    server = build_list_server(
        ListServerConfig(
            sip=("127.0.0.1", 0),
            core=("127.0.0.1", lab.core.port),
            identity=LIST_IDENTITY,
            kms=KmsLink(
                lab.kms.address,
                lab.ids["kms"].fingerprint(),
                lab.kms_keys[LIST_USER],
                cert,
                key_file,
                timeout=5.0,
            ),
            store=lab.workdir / "lists.sqlite",
            groups=(Group(LIST_PSI, tuple(f"sip:{m}@{DOMAIN}" for m in LIST_MEMBERS)),),
        ),
        reactor=lab.reactor,
    )
    server.startService()
    lab.stops.append(server.stopService)
    lab.core.list_server = server.address
    lab.core.list_psis = frozenset({LIST_PSI})
    lab.core.known_users = frozenset({f"sip:{OFFLINE_USER}@{DOMAIN}"})
    return server


async def _next_message(reactor: Any, ue: Any, timeout: float = 5.0) -> Any:
    """The UE's next protected MESSAGE, or None when none comes in ``timeout`` seconds."""
    try:
        return await ue.im.next_message().addTimeout(timeout, reactor)
    except defer.TimeoutError:
        return None


async def _read_messages(reactor: Any, ue: Any, count: int) -> list[dict[str, str]]:
    got = []
    for _ in range(count):
        message = await _next_message(reactor, ue)
        if message is None:
            break
        got.append({"text": message.text, "protected_by": message.protected_by})
    return got


async def _immediate_messages(lab: _Lab) -> None:
    """Scenario 7: immediate messages protected with keys from the KMS (TR 33.829 §8.3.1.1):
    alice to bob one to one; alice to the list ``LIST_PSI`` (bob, carol and erin, who is not
    registered) with a ticket naming the list only, so the list server re-protects it for
    each member; the same with a URI list naming the members, so they resolve alice's own
    ticket and get her parts untouched; erin registers and gets both from the store."""
    from lab.ue import KmsAccess
    from lab.uesim import UeSim

    if lab.result.kms is None or lab.kms is None or lab.core is None:
        return
    reactor, alice = lab.reactor, lab.kms_ues["alice"]
    bob, carol = lab.kms_ues["bob"], lab.kms_ues["carol"]
    server = _start_list_server(lab)
    members = [f"sip:{m}@{DOMAIN}" for m in LIST_MEMBERS]
    scenario = _kms_scenario(
        lab,
        "messages",
        **{"from": alice.aor, "to": bob.aor, "list": LIST_PSI, "members": members},
    )
    scenario["offline"] = f"sip:{OFFLINE_USER}@{DOMAIN}"
    log.info("kms: alice sends bob a SIP MESSAGE protected with keys from the KMS (PSK/MIME)")
    text = "Hello Bob, this MESSAGE is for you only."
    sent = await alice.im.send(bob.aor, text)
    scenario["one_to_one"] = {"call_id": sent.call_id, "status": sent.status}
    _kms_check(
        lab, scenario, "alice to bob answered 200", sent.status == 200, sent.warning or "200"
    )
    got = await _next_message(reactor, bob) if sent.status == 200 else None
    _kms_check(
        lab,
        scenario,
        "bob resolved the ticket, verified alice's TRANSFER_INIT and read the text",
        got is not None and got.text == text and got.protected_by == alice.aor,
        f"protected by {got.protected_by}" if got is not None else "nothing read",
    )
    log.info("kms: alice sends a MESSAGE to the list {psi}; erin is not registered", psi=LIST_PSI)
    to_list = "Hello friends (a ticket for the list)."
    with_uris = "Hello friends (a ticket for each of you)."
    first = await alice.im.send(LIST_PSI, to_list)
    second = await alice.im.send(LIST_PSI, with_uris, recipients=members)
    scenario["list_status"] = [first.status, second.status]
    _kms_check(
        lab,
        scenario,
        "the list server accepted both (202)",
        first.status == second.status == 202,
        f"{first.status}, {second.status}",
    )
    delivered: dict[str, list[dict[str, str]]] = {}
    for name, ue in (("bob", bob), ("carol", carol)):
        delivered[name] = await _read_messages(reactor, ue, 2)
    access = KmsAccess(
        lab.kms.address,
        lab.ids["kms"].fingerprint(),
        lab.kms_keys[OFFLINE_USER],
        cert_files=lab.files[OFFLINE_USER],
        timeout=5.0,
    )
    erin = UeSim(
        reactor,
        OFFLINE_USER,
        lab.ids[OFFLINE_USER],
        lab.pcscf.gm,
        domain=DOMAIN,
        keylog=lab.keylog,
        media_timeout=5.0,
        kms=access,
    )
    await erin.start()
    lab.stops.append(erin.stop)

    def kept() -> int:
        return len(server.store.pending(scenario["offline"], float(reactor.seconds())))

    await _wait(reactor, lambda: kept() == 2)
    stored = kept()
    scenario["stored_for_offline"] = stored
    _kms_check(lab, scenario, "both kept for erin, who is not registered", stored == 2, str(stored))
    reg = await erin.register()
    _kms_check(lab, scenario, "erin registered", reg.status == 200, str(reg.status))
    delivered[OFFLINE_USER] = await _read_messages(reactor, erin, 2)
    scenario["delivered"] = delivered
    expected = [
        {"text": to_list, "protected_by": LIST_IDENTITY},
        {"text": with_uris, "protected_by": alice.aor},
    ]
    for name in LIST_MEMBERS:
        _kms_check(
            lab,
            scenario,
            f"{name} read both: re-protected by the list server, then alice's own",
            sorted(delivered[name], key=lambda m: m["text"])
            == sorted(expected, key=lambda m: m["text"]),
            ", ".join(f"{m['protected_by']}" for m in delivered[name]),
        )
    refused = [r.status for ue in (bob, carol, erin) for r in ue.im.refused]
    _kms_check(lab, scenario, "no member refused a message", not refused, str(refused))


async def _start_conference(lab: _Lab) -> tuple[Any, Any]:
    """``e2ae mrfc`` and ``e2ae mrfp`` in process: the MRFC hosts ``CONFERENCE_URI`` (alice,
    carol and bob may join, floor 1), the MRFP registers with it over Mp (mutual TLS, each
    pinning the other's certificate), and the core routes the conference URI to the MRFC."""
    from iq.config import IqTlsConfig
    from mp.link import MpAgent
    from mrfc import core as mrfc_core
    from mrfc.config import KmsLink, MpLink, MrfcConfig
    from mrfc.service import build as build_mrfc
    from mrfp.config import MrfpConfig
    from mrfp.service import MrfpHandler

    assert lab.kms is not None and lab.core is not None
    cert, key_file = lab.files[MRFC_USER]
    mrfc = build_mrfc(
        MrfcConfig(
            sip=("127.0.0.1", 0),
            identity=MRFC_IDENTITY,
            kms=KmsLink(
                lab.kms.address,
                lab.ids["kms"].fingerprint(),
                lab.kms_keys[MRFC_USER],
                cert,
                key_file,
                timeout=5.0,
            ),
            mp=MpLink(("127.0.0.1", 0), cert, key_file, lab.ids["mrfp"].fingerprint()),
            conferences=(
                mrfc_core.Conference(
                    CONFERENCE_URI,
                    tuple(f"sip:{n}@{DOMAIN}" for n in ("alice", "carol", "bob")),
                    floors=(1,),
                ),
            ),
            next_hop=("127.0.0.1", lab.core.port),
            setup_timeout=5.0,
        ),
        reactor=lab.reactor,
    )
    mrfc.startService()
    lab.stops.append(mrfc.stopService)
    handler = MrfpHandler(MrfpConfig("127.0.0.1"), reactor=lab.reactor)
    lab.stops.append(handler.stop)
    agent = MpAgent(
        handler,
        "127.0.0.1",
        mrfc.mp_port,
        tls=IqTlsConfig(lab.ids["mrfp"], (lab.ids[MRFC_USER].fingerprint(),)),
        reactor=lab.reactor,
    )
    handler.notify = agent.notify
    agent.start()
    lab.stops.append(agent.stop)
    await agent.when_registered().addTimeout(5, lab.reactor)
    lab.core.conference_server = mrfc.address
    lab.core.conference_uris = frozenset({CONFERENCE_URI})
    return mrfc, handler


async def _conference(lab: _Lab) -> None:
    """Scenario 8: a conference (TS 33.328 Annex G): alice and carol join with keys from the
    KMS (TLS-PSK end to end to the MRFP, G.3), bob joins as an e2ae UE through the P-CSCF and
    the AGW (TLS to the AGW, plain TCP to the MRFP, G.2); the chat reaches everyone both ways
    and floor 1 passes from alice to carol."""
    from lab.uesim import CallFailed

    if lab.result.kms is None or lab.kms is None or lab.core is None or lab.bob is None:
        return
    reactor = lab.reactor
    _, mrfp = await _start_conference(lab)
    alice, carol = lab.kms_ues["alice"], lab.kms_ues["carol"]
    scenario = _kms_scenario(
        lab,
        "conference",
        **{"conference": CONFERENCE_URI, "focus": MRFC_IDENTITY},
    )
    log.info(
        "conf: alice and carol (KMS) and bob (e2ae, via the AGW) join {uri}", uri=CONFERENCE_URI
    )
    calls: dict[str, Any] = {}
    for name, ue in (("alice", alice), ("carol", carol), ("bob", lab.bob)):
        try:
            call = await defer.Deferred.fromCoroutine(ue.call(CONFERENCE_URI)).addTimeout(
                15, reactor
            )
        except (CallFailed, defer.TimeoutError) as exc:
            _kms_check(lab, scenario, f"{name} joined", False, str(exc))
            return
        calls[name] = call
    joined = {
        name: {
            media: {"proto": leg.proto, "tls_psk": leg.tls_psk}
            for media, leg in call.streams.items()
        }
        for name, call in calls.items()
    }
    scenario["participants"] = joined
    keyed = all(leg["tls_psk"] for name in ("alice", "carol") for leg in joined[name].values())
    _kms_check(lab, scenario, "alice and carol joined with TLS-PSK from the KMS", keyed)
    bob_legs = calls["bob"].streams
    via_agw = all(leg.verified_fingerprint is not None for leg in bob_legs.values())
    _kms_check(
        lab,
        scenario,
        "bob joined through the AGW (TLS verified at the AGW, plain TCP to the MRFP)",
        via_agw and all(not leg.tls_psk for leg in bob_legs.values()),
    )
    contexts = len(mrfp.contexts)
    terminations = mrfp.termination_count
    scenario["mrfp"] = {"contexts": contexts, "terminations": terminations}
    _kms_check(
        lab,
        scenario,
        "the MRFP holds one context with six terminations",
        (contexts, terminations) == (1, 6),
        f"{contexts} context(s), {terminations} termination(s)",
    )

    def live() -> int:
        """Terminations whose stream is up at the MRFP: TLS-PSK ones once the handshake is
        done, plain ones (bob's, from the AGW) once TCP is."""
        done = {e.termination for e in mrfp.events if e.kind == "tls-established"}
        for context in mrfp.contexts.values():
            for tid, term in context.terminations.items():
                plain = term.request.security == "plain"
                if plain and any(
                    e.termination == tid and e.kind == "tcp-established" for e in mrfp.events
                ):
                    done.add(tid)
        return len(done)

    up = await _wait(reactor, lambda: live() == 6)
    _kms_check(lab, scenario, "every stream is up at the MRFP", up, f"{live()} of 6")
    chat_ok = True
    seen = dict.fromkeys(calls, 0)
    for sender in ("alice", "bob"):
        text = f"Hello conference, from {sender}.".encode()
        await calls[sender].msrp.send_message(text)
        for other in (n for n in calls if n != sender):
            seen[other] += 1
            try:
                got = await calls[other].msrp.wait_messages(seen[other]).addTimeout(5, reactor)
            except defer.TimeoutError:
                got = []
            ok = [m.body for m in got[-1:]] == [text]
            chat_ok = chat_ok and ok
            scenario.setdefault("chat", []).append({"from": sender, "to": other, "ok": ok})
    _kms_check(lab, scenario, "the chat reached every other participant, both ways", chat_ok)
    floor = await _pass_floor(reactor, calls["alice"], calls["carol"])
    scenario["floor"] = floor
    _kms_check(
        lab,
        scenario,
        "floor 1: alice granted, carol queued, granted when alice released",
        floor == ["alice granted", "carol pending", "alice released", "carol granted"],
        ", ".join(floor),
    )
    for name, ue in (("alice", alice), ("carol", carol), ("bob", lab.bob)):
        bye = await ue.hangup(calls[name])
        _kms_check(lab, scenario, f"{name} left (BYE 200)", bye.status == 200, str(bye.status))
    _kms_check(
        lab,
        scenario,
        "the MRFP holds nothing afterwards",
        await _wait(reactor, lambda: mrfp.termination_count == 0),
        str(mrfp.termination_count),
    )


async def _pass_floor(reactor: Any, first: Any, second: Any) -> list[str]:
    """``first`` takes floor 1, ``second`` asks for it (queued), ``first`` releases it."""
    steps: list[str] = []
    try:
        grant = await first.bfcp.request_floor(1).addTimeout(5, reactor)
        steps.append("alice granted")
        waiting = second.bfcp.request_floor(1)
        await defer.Deferred.fromCoroutine(_sleep(reactor, 0.2))
        steps.append("carol granted" if waiting.called else "carol pending")
        await first.bfcp.release_floor(grant.floor_request_id).addTimeout(5, reactor)
        steps.append("alice released")
        await waiting.addTimeout(5, reactor)
        steps.append("carol granted")
    except Exception as exc:  # a step that fails ends the list with why
        steps.append(f"failed: {type(exc).__name__}: {exc}")
    return steps


async def _sleep(reactor: Any, seconds: float) -> None:
    from twisted.internet import task

    await task.deferLater(reactor, seconds, lambda: None)


async def _stop(lab: _Lab) -> None:
    """Stop everything started, last first; best effort."""
    for stop in reversed(lab.stops):
        try:
            await defer.maybeDeferred(stop)
        except Exception:  # noqa: S110 - best effort at shutdown
            pass


async def _tls_verified_at_pcscf(
    reactor: Any,
    result: DemoResult,
    recorder: FlowRecorder | None,
    call_id: str,
    count: int,
    name: str,
) -> None:
    """Wait until the P-CSCF logged ``count`` "TLS verified" streams of the call (the AGW's
    Notify over Iq), so that the flow shows them before the BYE."""
    if recorder is None:
        return

    def verified() -> int:
        return sum(
            1
            for e in recorder.events
            if e.get("call_id") == call_id
            and str(e.get("log_namespace", "")).startswith("pcscf")
            and "TLS verified" in str(e.get("log_format", ""))
        )

    await _wait(reactor, lambda: verified() >= count)
    result.check(
        f"{name}: the P-CSCF learnt over Iq that every TLS leg was verified",
        verified() >= count,
        f"{verified()} of {count}",
    )


def _call_summary(
    result: DemoResult,
    name: str,
    ue: Any,
    call: Any,
    core_protos: tuple[str, ...],
    gateway: Any,
    watch: _AgwWatch,
    far_end: Any,
) -> dict[str, Any]:
    """The JSON of one call; checks every stream on the way."""
    established = watch.of("TlsEstablished")
    streams: list[dict[str, Any]] = []
    for index, leg in enumerate(call.streams.values()):
        peer = f"127.0.0.1:{leg.local_port}"
        mine = [e for e in established if e.peer == peer]
        stats = gateway.stats(mine[-1].termination) if mine else None
        agw_fp = gateway.identity.fingerprint("sha-256").value
        ue_fp = ue.fingerprint.value
        ue_side = leg.verified_fingerprint == agw_fp
        agw_side = bool(mine) and mine[-1].fingerprint.value == ue_fp
        conn = leg.connection
        stream = {
            "media": leg.action.media,
            "proto_ue": leg.proto,
            "proto_core": core_protos[index] if index < len(core_protos) else None,
            "fingerprint_verified": ue_side and agw_side,
            "bytes_to_core": stats.bytes_to_core if stats else 0,
            "bytes_to_ue": stats.bytes_to_ue if stats else 0,
            "ue_fingerprint": ue_fp,
            "agw_fingerprint": leg.verified_fingerprint,
            "agw_termination": mine[-1].termination if mine else None,
        }
        streams.append(stream)
        label = f"{name} {leg.kind}"
        result.check(f"{label}: UE leg is TLS", str(stream["proto_ue"]).startswith("TCP/TLS/"))
        result.check(
            f"{label}: core leg is plain TCP",
            stream["proto_core"] in ("TCP/MSRP", "TCP/BFCP"),
            str(stream["proto_core"]),
        )
        result.check(
            f"{label}: fingerprints verified (UE checked the AGW, the AGW checked the UE)",
            stream["fingerprint_verified"],
        )
        result.check(
            f"{label}: AGW relayed what the UE sent and received",
            stats is not None
            and stats.bytes_to_core == conn.bytes_sent > 0
            and stats.bytes_to_ue == conn.bytes_received > 0,
            f"to core {stream['bytes_to_core']} (UE sent {conn.bytes_sent}), "
            f"to UE {stream['bytes_to_ue']} (UE received {conn.bytes_received})",
        )
        if far_end is not None:
            other = far_end.streams[leg.kind].connection
            result.check(
                f"{label}: what reached the core side reached the far UE",
                stats is not None and other.bytes_received == stats.bytes_to_core,
                f"{other.bytes_received}",
            )
    return {
        "name": name,
        "from": ue.aor,
        "to": str(call.dialog.remote_uri),
        "call_id": call.call_id,
        "streams": streams,
    }


def _table(result: DemoResult, out: IO[str]) -> None:
    print("\nSummary", file=out)
    header = f"{'call':<8} {'stream':<12} {'UE leg':<14} {'core leg':<10} {'verified':<9} "
    header += f"{'to core':>8} {'to UE':>8}"
    print(header, file=out)
    for call in result.calls:
        for s in call["streams"]:
            print(
                f"{call['name']:<8} {s['media']:<12} {s['proto_ue']:<14} "
                f"{s['proto_core'] or '-':<10} {'yes' if s['fingerprint_verified'] else 'NO':<9} "
                f"{s['bytes_to_core']:>8} {s['bytes_to_ue']:>8}",
                file=out,
            )
    print(f"impostor refused: {'yes' if result.impostor_refused else 'NO'}", file=out)
    print(f"Iq impostor refused: {'yes' if result.iq_impostor_refused else 'NO'}", file=out)
    if result.kms is not None:
        _kms_table(result.kms, out)
    print("\nChecks", file=out)
    for c in result.checks:
        print(
            f"  [{'ok' if c.ok else 'FAIL'}] {c.name}" + (f" ({c.detail})" if c.detail else ""),
            file=out,
        )
    if result.error:
        print(f"  [FAIL] {result.error}", file=out)
    print(f"\n{'ALL GOOD' if result.ok else 'DEMO FAILED'}", file=out)


def _kms_table(kms: dict[str, Any], out: IO[str]) -> None:
    print(f"\nKMS {kms['kms']}", file=out)
    print(f"{'scenario':<9} {'stream':<12} {'proto':<14} {'TLS':<8} {'cipher':<24} keys", file=out)
    for scenario in kms["scenarios"]:
        for s in scenario.get("streams", ()):
            print(
                f"{scenario['name']:<9} {s['media']:<12} {s['proto']:<14} "
                f"{s['tls_version'] or '-':<8} {s['cipher'] or '-':<24} "
                f"{'match' if s['keys_match'] else 'DIFFER'}",
                file=out,
            )
    by_name = {s["name"]: s for s in kms["scenarios"]}
    if "kms call" in by_name:
        call = by_name["kms call"]
        print(
            f"kms call: treatment {', '.join(call.get('treatment', ())) or '-'}, "
            f"AGW terminations {call.get('agw_terminations', '-')}",
            file=out,
        )
    if "via AS" in by_name:
        via = by_name["via AS"]
        ends = via.get("tls_terminated_by", {})
        print(
            f"via AS: alice to dave through {via['app_server']}, TLS-PSK hop by hop; "
            f"told: alice {ends.get('alice') or '-'}, dave {ends.get('dave') or '-'}",
            file=out,
        )
    if "messages" in by_name:
        im = by_name["messages"]
        print(
            f"messages: alice to bob {im.get('one_to_one', {}).get('status', '-')}; "
            f"to {im['list']} {', '.join(map(str, im.get('list_status', ()))) or '-'}, "
            f"{im.get('stored_for_offline', '-')} kept for {im['offline']} until it registered",
            file=out,
        )
    if "conference" in by_name:
        conf = by_name["conference"]
        print(
            f"conference {conf['conference']}: "
            + ", ".join(
                f"{n} {'TLS-PSK' if all(v['tls_psk'] for v in legs.values()) else 'via AGW'}"
                for n, legs in conf.get("participants", {}).items()
            )
            + f"; floor: {', '.join(conf.get('floor', ())) or '-'}",
            file=out,
        )
    if "carol" in by_name:
        carol = by_name["carol"]
        print(
            f"carol: offer keyed for bob answered {carol['status']}, "
            f"TLS-PSK refused: {'yes' if carol.get('tls_refused') else 'NO'}",
            file=out,
        )


def media_ports(events: list[dict[str, Any]]) -> dict[str, set[int]]:
    """The plain-TCP MSRP and BFCP ports of a run (the core legs), from its log events: the
    core port of each AGW termination whose access port a UE's MSRP or BFCP stream used."""
    ports: dict[str, set[int]] = {"msrp": set(), "bfcp": set()}
    core_of: dict[int, int] = {}
    for event in events:
        if event.get("log_namespace") == "accessgw" and event.get("core_port"):
            core_of[int(event.get("access_port") or 0)] = int(event["core_port"])
    for event in events:
        kind = event.get("stream")
        if kind not in ports or not str(event.get("log_namespace", "")).startswith("lab.media"):
            continue
        port = str(event.get("peer") or "").rpartition(":")[2]
        if port.isdigit() and int(port) in core_of:
            ports[kind].add(core_of[int(port)])
    return ports


def main(
    as_json: bool,
    timeout: float = 30.0,
    *,
    pcap: Path | None = None,
    keylog: Path | None = None,
    trace: Path | None = None,
) -> int:
    """Run the demo in this process (the ``e2ae demo`` command); exit code 0 only if ok, 2 if
    the capture of ``pcap`` cannot be made. ``keylog`` (default: ``pcap`` with the suffix
    ``.keys``, with ``pcap``) keeps the NSS key log of the demo's TLS sessions."""
    from twisted.internet import reactor, task

    from lab.capture import Capture, CaptureError, keylog_for

    if pcap is not None and keylog is None:
        keylog = keylog_for(pcap)
    if keylog is not None:
        # a fresh key log, readable by its owner only (the lines are session secrets)
        os.close(os.open(keylog, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    capture = Capture(pcap) if pcap is not None else None
    if capture is not None:
        try:
            capture.start()
        except CaptureError as exc:
            print(f"e2ae demo: cannot capture: {exc}", file=sys.stderr)
            return 2
    recorder = FlowRecorder(echo=None if as_json else sys.stdout)
    globalLogPublisher.addObserver(recorder)
    json_log: IO[str] | None = None
    json_observer: Any = None
    if trace is not None:
        from twisted.logger import jsonFileLogObserver

        trace.mkdir(parents=True, exist_ok=True)
        json_log = (trace / "demo.json").open("w", encoding="utf-8")
        json_observer = jsonFileLogObserver(json_log)
        globalLogPublisher.addObserver(json_observer)
    result = DemoResult()

    async def body(r: Any) -> None:
        with tempfile.TemporaryDirectory(prefix="e2ae-demo-") as tmp:
            try:
                d = defer.Deferred.fromCoroutine(
                    run_demo(r, Path(tmp), result, recorder, keylog=keylog)
                )
                await d.addTimeout(timeout, r)
            except Exception as exc:
                while isinstance(exc, defer.FirstError):
                    exc = exc.subFailure.value  # type: ignore[assignment]
                result.error = f"{type(exc).__name__}: {exc}"

    if not as_json:
        print(
            "e2ae demo: P-CSCF + AGW (Iq) + core stub + UEs alice and bob, then a KMS and "
            "UEs alice, bob and carol in KMS mode, an MSRP AS and a list server, on 127.0.0.1\n"
        )
    try:
        task.react(lambda r: defer.Deferred.fromCoroutine(body(r)))
    except SystemExit:
        pass
    globalLogPublisher.removeObserver(recorder)
    del reactor
    extra: dict[str, Any] = {}
    lines: list[str] = []
    if trace is not None and json_log is not None:
        from lab.trace import build, call_ids, read_events, render_svg

        globalLogPublisher.removeObserver(json_observer)
        json_log.close()
        diagram = build(read_events((trace / "demo.json").read_text("utf-8").splitlines()))
        (trace / "demo.svg").write_text(render_svg(diagram, title="e2ae demo"), "utf-8")
        extra["trace"] = {
            "log": str(trace / "demo.json"),
            "svg": str(trace / "demo.svg"),
            "lanes": list(diagram.lanes),
            "arrows": len(diagram.arrows),
            "calls": call_ids(diagram),
        }
        lines.append(f"call-flow picture: {trace / 'demo.svg'} (log {trace / 'demo.json'})")
    if capture is not None and pcap is not None and keylog is not None:
        from lab.capture import tshark_command

        capture.stop()
        ports = media_ports(recorder.events)
        command = tshark_command(
            pcap,
            keylog,
            iq_port=result.iq_port,
            msrp_ports=ports["msrp"],
            bfcp_ports=ports["bfcp"],
        )
        extra["pcap"] = {
            "file": str(pcap),
            "keylog": str(keylog),
            "iq_port": result.iq_port,
            "msrp_ports": sorted(ports["msrp"]),
            "bfcp_ports": sorted(ports["bfcp"]),
            "tshark": command,
        }
        lines += [f"capture: {pcap}", f"key log: {keylog}", f"read it with: {command}"]
    elif keylog is not None:
        extra["keylog"] = str(keylog)
        lines.append(f"key log: {keylog}")
    if as_json:
        print(json.dumps({**result.as_json(), **extra}, indent=2))
    else:
        _table(result, sys.stdout)
        if lines:
            print("\n" + "\n".join(lines))
    return 0 if result.ok else 1
