"""``e2ae run`` with the example topology as separate OS processes on free loopback ports; a call
with MSRP and BFCP through it driven by ``e2ae ue`` processes; SIGTERM and a clean exit."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import tomllib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import given
from hypothesis import strategies as st

from lab.run import TopologyError, flags, load, plan
from tests.conftest import REPO, e2ae_command, run_e2ae


def _free_port() -> int:
    """A port free for both TCP and UDP right now (the P-CSCF binds both)."""
    while True:
        tcp = socket.socket()
        tcp.bind(("127.0.0.1", 0))
        port = int(tcp.getsockname()[1])
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            udp.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            tcp.close()
        udp.close()
        return port


def _topology(tmp_path: Path) -> tuple[Path, str]:
    text = (REPO / "examples" / "lab.toml").read_text()
    for port in sorted(set(re.findall(r'"127\.0\.0\.1:(\d+)"', text))):
        text = text.replace(f'"127.0.0.1:{port}"', f'"127.0.0.1:{_free_port()}"')
    text = text.replace('keylog = "lab-keys.log"', f'keylog = "{tmp_path / "keys.log"}"')
    path = tmp_path / "lab.toml"
    path.write_text(text)
    gm = tomllib.loads(text)["pcscf"]["gm"]
    return path, gm


def test_example_topology_parses_and_names_every_node_kind() -> None:
    data = tomllib.loads((REPO / "examples" / "lab.toml").read_text())
    assert {"core", "pcscf", "accessgw", "ue"} <= set(data)


def test_run_topology_as_processes_call_through_it_then_sigterm(tmp_path: Path) -> None:
    config, gm = _topology(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    run = subprocess.Popen(
        [*e2ae_command(), "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=REPO,
        env=env,
    )
    try:
        assert run.stdout is not None
        lines = []
        for line in run.stdout:
            lines.append(line)
            if line.startswith("run: all nodes up") or "did not start" in line:
                break
        assert lines and lines[-1].startswith("run: all nodes up (4)"), lines
        pids_line = [ln for ln in lines if ln.startswith("run: pcscf up")]
        assert pids_line and gm in pids_line[0]

        call = run_e2ae(
            [
                "ue",
                "--pcscf",
                gm,
                "--user",
                "alice",
                "--call",
                "sip:bob@lab.example",
                "--message",
                "hello bob",
                "--wait-messages",
                "1",
                "--floor",
                "--json",
            ],
            timeout=60,
        )
        out = call.stdout.decode().splitlines()
        assert call.returncode == 0, out + call.stderr.decode().splitlines()[-20:]
        assert out[0] == "ue alice registered sip:alice@lab.example (200)"
        result = json.loads(out[1])
        assert result["bye"] == 200
        assert result["messages_received"] == ["hello from bob"]
        assert result["floor_granted"] == [1]
        streams = result["streams"]
        assert [s["proto"] for s in streams] == ["TCP/TLS/MSRP", "TCP/TLS/BFCP"]
        assert all(s["fingerprint_verified"] and s["bytes_sent"] > 0 for s in streams)

        peer = run_e2ae(
            [
                "ue",
                "--pcscf",
                gm,
                "--user",
                "carol",
                "--call",
                "sip:peer@lab.example",
                "--message",
                "hi core",
                "--wait-messages",
                "1",
                "--json",
            ],
            timeout=60,
        )
        assert peer.returncode == 0
        assert json.loads(peer.stdout.decode().splitlines()[1])["messages_received"] == [
            "echo: hi core"
        ]
        assert all(s["e2ae_applied"] for s in streams)

        # misbehaving UEs: another certificate is refused by the AGW; e2ae asked for without
        # registering it is not applied (the P-CSCF passes the streams through, TLS UE to UE)
        eve = run_e2ae(
            [
                "ue",
                "--pcscf",
                gm,
                "--user",
                "eve",
                "--call",
                "sip:peer@lab.example",
                "--message",
                "x",
                "--present",
                "other",
                "--timeout",
                "5",
                "--json",
            ],
            timeout=60,
        )
        assert eve.returncode == 1
        assert json.loads(eve.stdout.decode().splitlines()[1])["error"]
        mallory = run_e2ae(
            [
                "ue",
                "--pcscf",
                gm,
                "--user",
                "mallory",
                "--call",
                "sip:bob@lab.example",
                "--no-mechanisms",
                "--message",
                "x",
                "--json",
            ],
            timeout=60,
        )
        assert mallory.returncode == 0
        report = json.loads(mallory.stdout.decode().splitlines()[1])
        assert [s["e2ae_applied"] for s in report["streams"]] == [False, False]
        agw_fp = streams[0]["peer_fingerprint"]
        assert all(s["peer_fingerprint"] != agw_fp for s in report["streams"])

        # the key log of the AGW's access TLS (for Wireshark) has the sessions' secrets
        assert "CLIENT_TRAFFIC_SECRET_0" in (tmp_path / "keys.log").read_text()
    finally:
        run.send_signal(signal.SIGTERM)
        rest, _ = run.communicate(timeout=30)
    assert run.returncode == 0
    assert "run: stopped" in rest
    # bob's answered call was reported by the ue node through run's output
    assert '"ended": "remote hung up"' in rest
    # everything released: the P-CSCF's Gm port can be bound again
    host, port = gm.rsplit(":", 1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, int(port)))
    sock.close()


def test_run_refuses_an_unknown_node_kind(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[router]\nx = 1\n")
    done = run_e2ae(["run", "--config", str(bad)])
    assert done.returncode == 2
    assert b"unknown node kind(s) router" in done.stderr


# -- the topology file (pure) ------------------------------------------------------------------

_KEYS = st.text(alphabet="abcdefghij_", min_size=1, max_size=12).filter(
    lambda k: not k.startswith("_") and not k.endswith("_")
)
_VALUES = st.one_of(
    st.booleans(),
    st.integers(-5, 70000),
    st.text(alphabet="abc:.0123456789", min_size=1, max_size=20),
    st.lists(st.text(alphabet="xyz ", min_size=1, max_size=8), min_size=1, max_size=3),
)


@given(st.dictionaries(_KEYS, _VALUES, max_size=6))
def test_every_key_becomes_its_flag(table: dict[str, object]) -> None:
    parser = argparse.ArgumentParser()
    for key, value in table.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            parser.add_argument(flag, action="store_true")
        elif isinstance(value, list):
            parser.add_argument(flag, action="append")
        else:
            parser.add_argument(flag)
    parsed = vars(parser.parse_args(flags(table)))
    for key, value in table.items():
        got = parsed[key]
        if isinstance(value, bool):
            assert got is value
        elif isinstance(value, list):
            assert got == [str(v) for v in value]
        else:
            assert got == str(value)


def test_plan_fills_in_the_links_between_nodes(tmp_path: Path) -> None:
    topology = load(REPO / "examples" / "lab.toml")
    nodes = dict(plan(topology, REPO / "examples", tmp_path))
    assert list(nodes) == ["core", "pcscf", "accessgw", "ue bob"]
    pcscf, agw, bob = nodes["pcscf"], nodes["accessgw"], nodes["ue bob"]
    assert pcscf[pcscf.index("--next-hop") + 1] == topology["core"]["sip"]
    assert agw[agw.index("--alg") + 1] == topology["pcscf"]["iq"]
    assert bob[bob.index("--pcscf") + 1] == topology["pcscf"]["gm"]
    cert = Path(agw[agw.index("--cert") + 1])
    assert cert.parent == tmp_path and cert.read_bytes().startswith(b"-----BEGIN CERTIFICATE")
    assert agw[agw.index("--keylog") + 1] == str(REPO / "examples" / "lab-keys.log")


def test_plan_refuses_a_ue_without_user(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match="needs a user"):
        plan({"ue": [{"answer": 1}]}, tmp_path, tmp_path)


def test_plan_secures_iq_with_pinned_certificates(tmp_path: Path) -> None:
    """``e2ae run`` never leaves Iq on plain TCP unless the topology asks: each end gets a
    fresh Iq certificate and pins the other's fingerprint."""
    from cryptography import x509

    from certs.fingerprint import fingerprint_of

    nodes = dict(plan(load(REPO / "examples" / "lab.toml"), REPO / "examples", tmp_path))
    pcscf, agw = nodes["pcscf"], nodes["accessgw"]
    assert "--iq-insecure" not in pcscf + agw

    def pinned(args: list[str]) -> str:
        return args[args.index("--iq-peer") + 1]

    def own(args: list[str]) -> str:
        prefix = Path(args[args.index("--iq-tls") + 1])
        assert prefix.parent == tmp_path
        cert = x509.load_pem_x509_certificate(prefix.with_suffix(".crt").read_bytes())
        der = cert.public_bytes(serialization.Encoding.DER)
        return fingerprint_of(der).value

    assert pinned(pcscf) == own(agw) and pinned(agw) == own(pcscf)
    assert own(pcscf) != own(agw)


def test_plan_plain_iq_only_when_asked(tmp_path: Path) -> None:
    topology = {
        "pcscf": {"iq": "127.0.0.1:2944", "iq_insecure": True, "iq_allow": "<a>@127.0.0.1"},
        "accessgw": {"access_ip": "127.0.0.1", "core_ip": "127.0.0.1"},
    }
    nodes = dict(plan(topology, tmp_path, tmp_path / "a"))
    assert "--iq-insecure" in nodes["pcscf"] and "--iq-insecure" in nodes["accessgw"]
    assert "--iq-tls" not in nodes["pcscf"] + nodes["accessgw"]
    # a topology that sets up Iq TLS itself is left as written
    mine = {"pcscf": {"iq_tls": "my/pcscf", "iq_peer": "sha-256 AB"}, "accessgw": {}}
    nodes = dict(plan(mine, tmp_path, tmp_path / "b"))
    assert nodes["pcscf"][nodes["pcscf"].index("--iq-tls") + 1] == str(tmp_path / "my/pcscf")
    assert "--iq-tls" not in nodes["accessgw"]
