"""``e2ae run`` with the example topology as separate OS processes on free loopback ports; a call
with MSRP and BFCP through it driven by ``e2ae ue`` processes; SIGTERM and a clean exit."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import tomllib
from pathlib import Path

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
