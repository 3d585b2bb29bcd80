"""``e2ae iq`` as a real process, and the Iq command-line options."""

from __future__ import annotations

import argparse
import datetime
import subprocess
from pathlib import Path

import pytest

import certs
from iq import codec, config, samples, tpkt
from iq.errors import LocalIqError
from iq.transactions import FaultInjector, FaultPlan, ReplyCache, TransactionIds
from tests.conftest import require_tool, run_e2ae


def test_example_prints_canonical_messages_that_decode() -> None:
    result = run_e2ae(["iq", "example", "--call", "terminating"])
    assert result.returncode == 0, result.stderr
    text = result.stdout.decode()
    chunks = [c for c in text.split("; ") if c.strip()]
    steps = samples.terminating()
    assert len(chunks) == len(steps)
    for chunk, step in zip(chunks, steps, strict=True):
        body = chunk.split("\n", 1)[1]
        assert codec.decode(body.encode()) == step.message


def test_decode_canonicalises_and_reports_codes(tmp_path: Path) -> None:
    loose = b'megaco/3 <agw> t=1{c=-{sc=ROOT{sv{mt=rs,re="901 Cold Boot",pf=e2aeiq/1}}}}'
    result = run_e2ae(["iq", "decode"], input=loose)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().startswith("MEGACO/3 <agw>\nTransaction = 1 {\n")
    assert "Method = Restart" in result.stdout.decode()
    framed = tmp_path / "two.tpkt"
    framed.write_bytes(tpkt.frame(loose) + tpkt.frame(loose))
    result = run_e2ae(["iq", "decode", "--tpkt", str(framed)])
    assert result.stdout.decode().count("MEGACO/3 <agw>") == 2
    result = run_e2ae(["iq", "decode"], input=b"MEGACO/7 <agw> t=1{}")
    assert result.returncode == 1
    assert b"H.248 406" in result.stderr


def test_example_pcap_opens_in_tshark(tmp_path: Path) -> None:
    require_tool("text2pcap")
    tshark = require_tool("tshark")
    pcap = tmp_path / "iq.pcapng"
    result = run_e2ae(["iq", "example", "--call", "originating", "--pcap", str(pcap)])
    assert result.returncode == 0, result.stderr
    out = subprocess.run(
        [tshark, "-r", str(pcap), "-T", "fields", "-e", "megaco.transid"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == [str(s.message.transactions[0].transaction_id) for s in samples.originating()]


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    return parser.parse_args(argv)


def test_tls_options(tmp_path: Path) -> None:
    pair = certs.generate("agw", now=datetime.datetime.now(datetime.UTC))
    cert, key = certs.write(pair, tmp_path)
    peer = certs.generate("alg", now=datetime.datetime.now(datetime.UTC)).fingerprint()
    # Plain TCP only when asked for, never by default, never together with TLS.
    with pytest.raises(LocalIqError, match="--iq-insecure"):
        config.tls_from_args(_parse([]))
    assert config.tls_from_args(_parse(["--iq-insecure"])) is None
    with pytest.raises(LocalIqError, match="exclude"):
        config.tls_from_args(_parse(["--iq-insecure", "--iq-tls", str(cert.with_suffix(""))]))
    tls = config.tls_from_args(
        _parse(["--iq-tls", "--iq-cert", str(cert), "--iq-key", str(key), "--iq-peer", peer.value])
    )
    assert tls is not None
    assert tls.peer_fingerprints == (peer,)
    assert tls.identity.fingerprint() == pair.fingerprint()
    prefix = str(cert.with_suffix(""))
    by_prefix = config.tls_from_args(_parse(["--iq-tls", prefix, "--iq-peer", peer.value]))
    assert by_prefix is not None and by_prefix.identity.fingerprint() == pair.fingerprint()
    with pytest.raises(LocalIqError):
        config.tls_from_args(_parse(["--iq-tls", "--iq-cert", str(cert), "--iq-key", str(key)]))
    with pytest.raises(LocalIqError):
        config.tls_from_args(_parse(["--iq-tls", "--iq-peer", peer.value]))
    with pytest.raises(LocalIqError):
        config.tls_from_args(
            _parse(
                ["--iq-tls", "--iq-cert", str(cert), "--iq-key", str(key), "--iq-peer", "md5 00"]
            )
        )


def test_fault_plan_parsing_and_seeded_decisions() -> None:
    plan = config.faults_from_args(_parse(["--iq-faults", "seed=5,drop=0.3,dup=0.2,delay=0.01"]))
    assert plan == FaultPlan(seed=5, delay=0.01, drop_rate=0.3, duplicate_rate=0.2)
    first = FaultInjector(plan)
    second = FaultInjector(plan)
    run1 = [first.next().copies for _ in range(200)]
    run2 = [second.next().copies for _ in range(200)]
    assert run1 == run2
    assert set(run1) == {0, 1, 2}
    assert 30 < run1.count(0) < 90
    cut = FaultInjector(FaultPlan(disconnect_after=3))
    assert [cut.next().disconnect for _ in range(3)] == [False, False, True]
    for bad in ("drop=2", "speed=1", "seed=x", "delay=-1"):
        with pytest.raises(LocalIqError):
            FaultPlan.parse(bad)


def test_reply_cache_and_ids() -> None:
    cache = ReplyCache(keep=10, limit=2)
    assert cache.seen(1, 0) is None
    cache.start(1, 0)
    assert cache.seen(1, 5) == "in-progress"
    cache.finish(1, b"reply", 5)
    assert cache.seen(1, 14) == b"reply"
    assert cache.seen(1, 15.5) is None  # expired
    for tid in (2, 3, 4):
        cache.finish(tid, b"r", 20)
    assert len(cache) == 2 and cache.seen(2, 20) is None
    ids = TransactionIds(2**32 - 2)
    assert [ids.allocate() for _ in range(3)] == [2**32 - 2, 2**32 - 1, 1]
