"""``e2ae pcscf`` as a real process: configuration checks and errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_e2ae

BASE = ["pcscf", "--gm", "127.0.0.1:0", "--core", "127.0.0.1:0", "--next-hop", "127.0.0.1:5999"]


def test_check_prints_the_configuration() -> None:
    plain = ["--iq-insecure", "--iq-allow", "<agw1>@127.0.0.1"]
    result = run_e2ae([*BASE, "--iq", "127.0.0.1:2944", *plain, "--check"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().split() == [
        "gm=127.0.0.1:0",
        "core=127.0.0.1:0",
        "next-hop=127.0.0.1:5999/udp",
        "iq=127.0.0.1:2944",
        "iq-tls=no",
        "iq-insecure",
        "iq-allow=<agw1>@127.0.0.1",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "Iq over plain TCP authenticates no gateway"),
        (["--iq-insecure"], "needs an allow-list"),
        (["--iq-insecure", "--iq-allow", "agw1"], "expected MID@ADDRESS"),
        (["--iq-insecure", "--iq-allow", "<a>@example.net"], "is not an address"),
        (["--iq-insecure", "--iq-allow", "<a>@127.0.0.1", "--iq-max-links", "0"], "at least 1"),
        (
            ["--iq-insecure", "--iq-allow", "<a>@127.0.0.1", "--iq-register-timeout", "nan"],
            "finite",
        ),
    ],
)
def test_plain_iq_is_an_explicit_opt_in(args: list[str], message: str) -> None:
    """Without --iq-tls the P-CSCF refuses to start unless plain TCP is asked for by name and
    the gateways that may register are listed."""
    result = run_e2ae([*BASE, "--iq", "127.0.0.1:2944", *args, "--check"])
    assert result.returncode == 2, result.stdout
    assert message in result.stderr.decode()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--iq", "localhost:2944"], "iq: 'localhost' is not an IP address"),
        (["--iq", "127.0.0.1"], "iq: expected HOST:PORT"),
        (["--iq", "0.0.0.0:2944"], "is a wildcard"),
        (["--iq-insecure"], "missing setting(s): iq"),
        (
            ["--iq", "127.0.0.1:1", "--iq-tls", "/nonexistent/pcscf", "--iq-peer", "sha-256 AB"],
            "does not exist",
        ),
    ],
)
def test_bad_settings_are_refused(args: list[str], message: str) -> None:
    result = run_e2ae([*BASE, *args, "--check"])
    assert result.returncode == 2
    assert message in result.stderr.decode()


def test_config_file_with_inline_policy_and_iq_tls(tmp_path: Path) -> None:
    made = run_e2ae(["certs", "new", "pcscf", "--out", str(tmp_path)])
    assert made.returncode == 0, made.stderr
    config = tmp_path / "pcscf.toml"
    config.write_text(
        '[pcscf]\ngm = "127.0.0.1:5060"\ncore = "127.0.0.1:5070"\nnext_hop = "127.0.0.1:5080"\n'
        'next_hop_transport = "tcp"\niq = "127.0.0.1:2944"\niq_tls = "pcscf"\n'
        f'iq_peers = ["sha-256 {":".join(["AB"] * 32)}"]\n'
        '[e2ae]\nnetwork_mechanisms = ["msrp-tls"]\n'
    )
    result = run_e2ae(["pcscf", "--config", str(config), "--gm", "127.0.0.1:6060", "--check"])
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode()
    assert "gm=127.0.0.1:6060" in out and "next-hop=127.0.0.1:5080/tcp" in out
    assert "iq-tls=yes" in out


def test_bad_policy_is_refused(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text('[e2ae]\non_agw_failure = "shrug"\n')
    result = run_e2ae([*BASE, "--iq", "127.0.0.1:1", "--policy", str(policy), "--check"])
    assert result.returncode == 2
    assert "on_agw_failure must be reject or bypass" in result.stderr.decode()


def test_iq_over_tls_needs_a_pinned_agw(tmp_path: Path) -> None:
    made = run_e2ae(["certs", "new", "pcscf", "--out", str(tmp_path)])
    assert made.returncode == 0, made.stderr
    result = run_e2ae([*BASE, "--iq", "127.0.0.1:0", "--iq-tls", str(tmp_path / "pcscf")])
    assert result.returncode == 2
    assert "iq_tls needs iq_peers" in result.stderr.decode()


def test_iq_over_tls_is_served_to_a_pinned_agw(tmp_path: Path) -> None:
    """The P-CSCF process serves Iq over mutual TLS: an AGW whose certificate is pinned with
    --iq-peer registers (ServiceChange accepted)."""
    import datetime
    import os
    import subprocess
    import sys

    import certs
    from tests.conftest import REPO

    now = datetime.datetime.now(datetime.UTC)
    alg, agw = certs.generate("pcscf", now=now), certs.generate("agw", now=now)
    certs.write(alg, tmp_path)
    certs.write(agw, tmp_path)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    args = [*BASE, "--iq", "127.0.0.1:0", "--iq-tls", str(tmp_path / "pcscf")]
    args += ["--iq-peer", agw.fingerprint("sha-256").value]
    proc = subprocess.Popen(
        [sys.executable, "-m", "lab.cli", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        iq_port = int(dict(f.split("=", 1) for f in line.split()[1:])["iq"].rsplit(":", 1)[1])
        script = (
            "import sys\n"
            "from pathlib import Path\n"
            "from twisted.internet import reactor\n"
            "from iq.config import IqTlsConfig\n"
            "from iq.link import IqAgent\n"
            "d = Path(sys.argv[1])\n"
            "tls = IqTlsConfig.from_files(d / 'agw.crt', d / 'agw.key', [sys.argv[3]])\n"
            "agent = IqAgent(None, '127.0.0.1', int(sys.argv[2]), tls=tls, seed=1)\n"
            "agent.start()\n"
            "agent.when_registered().addCallback(lambda _: (print('registered'), reactor.stop()))\n"
            "reactor.callLater(20, reactor.stop)\n"
            "reactor.run()\n"
        )
        pin = alg.fingerprint("sha-256").value
        agent = subprocess.run(
            [sys.executable, "-c", script, str(tmp_path), str(iq_port), pin],
            cwd=REPO,
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert b"registered" in agent.stdout, agent.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.parametrize(
    ("value", "code"), [("0", 0), ("1300", 0), ("65507", 0), ("65508", 2), ("-1", 2), ("x", 2)]
)
def test_udp_tcp_threshold_flag(value: str, code: int) -> None:
    plain = ["--iq-insecure", "--iq-allow", "<agw1>@127.0.0.1", "--iq", "127.0.0.1:2944"]
    result = run_e2ae([*BASE, *plain, "--udp-tcp-threshold", value, "--check"])
    assert result.returncode == code, result.stderr
    if code and value != "x":
        assert "udp_tcp_threshold must be between 0 and 65507" in result.stderr.decode()


def test_udp_tcp_threshold_key(tmp_path: Path) -> None:
    config = tmp_path / "pcscf.toml"
    config.write_text(
        '[pcscf]\ngm = "127.0.0.1:5060"\ncore = "127.0.0.1:5070"\nnext_hop = "127.0.0.1:5080"\n'
        'iq = "127.0.0.1:2944"\niq_insecure = true\niq_allow = ["<agw1>@127.0.0.1"]\n'
        'udp_tcp_threshold = "many"\n'
    )
    result = run_e2ae(["pcscf", "--config", str(config), "--check"])
    assert result.returncode == 2
    assert "udp_tcp_threshold must be a number" in result.stderr.decode()


def test_one_worker_checks_the_same_configuration() -> None:
    plain = ["--iq-insecure", "--iq-allow", "<agw1>@127.0.0.1", "--iq", "127.0.0.1:2944"]
    default = run_e2ae([*BASE, *plain, "--check"])
    one = run_e2ae([*BASE, *plain, "--workers", "1", "--check"])
    assert one.returncode == default.returncode == 0, one.stderr
    assert one.stdout == default.stdout


@pytest.mark.parametrize("value", ["0", "x"])
def test_workers_must_be_a_positive_number(value: str) -> None:
    result = run_e2ae([*BASE, "--workers", value, "--check"])
    assert result.returncode == 2
    assert "argument --workers" in result.stderr.decode()


def test_worker_ports_must_exist() -> None:
    plain = ["--iq-insecure", "--iq-allow", "<agw1>@127.0.0.1", "--iq", "127.0.0.1:0"]
    result = run_e2ae([*BASE, "--core", "127.0.0.1:65534", *plain, "--workers", "3"], timeout=20)
    assert result.returncode == 2
    assert "--core port 65534 + worker index 2 is beyond 65535" in result.stderr.decode()


def test_workers_need_so_reuseport() -> None:
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    plain = ["--iq-insecure", "--iq-allow", "<agw1>@127.0.0.1", "--iq", "127.0.0.1:0"]
    code = (
        "import socket, sys\n"
        "del socket.SO_REUSEPORT\n"
        "from lab.cli import main\n"
        f"sys.exit(main({[*BASE, *plain, '--workers', '2']!r}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        capture_output=True,
        timeout=20,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "needs SO_REUSEPORT" in result.stderr.decode()


def test_the_running_service_has_the_collector_thresholds_and_start_up_frozen() -> None:
    """The real ``e2ae pcscf`` start-up, with the reactor's run replaced by a report: the
    collector thresholds of docs/performance.md ("The garbage collector") are in force and what
    start-up made is frozen out of the collector's way."""
    import os
    import subprocess
    import sys

    from pcscf.service import GC_THRESHOLDS
    from tests.conftest import REPO

    script = (
        "import gc, sys\n"
        "from twisted.internet import reactor\n"
        "reactor.run = lambda *a, **k: print('gc', *gc.get_threshold(), gc.get_freeze_count())\n"
        "from lab.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    args = [*BASE, "--iq", "127.0.0.1:0", "--iq-insecure", "--iq-allow", "<agw1>@127.0.0.1"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        cwd=REPO,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    report = next(line for line in result.stdout.decode().splitlines() if line.startswith("gc "))
    *thresholds, frozen = (int(word) for word in report.split()[1:])
    assert tuple(thresholds) == GC_THRESHOLDS != (700, 10, 10)
    assert frozen > 10_000


def test_max_transactions_flag_bounds_the_running_service() -> None:
    """``--max-transactions 1`` on the real process: an unregistered UE's OPTIONS is answered
    403 and its transaction held (Timer J); the next new request gets 503 with Retry-After
    over the same UDP socket, and a retransmission of the first still gets its 403."""
    import os
    import socket
    import subprocess
    import sys

    from tests.conftest import REPO

    args = [*BASE, "--iq", "127.0.0.1:0", "--iq-insecure", "--iq-allow", "<agw1>@127.0.0.1"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-m", "lab.cli", *args, "--max-transactions", "1", "--retry-after", "5"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        fields = dict(word.split("=", 1) for word in line.split()[1:])
        host, port = fields["gm"].rsplit(":", 1)
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(10)
        me = sock.getsockname()

        def options(n: int) -> bytes:
            return (
                f"OPTIONS sip:bob@ims.test SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {me[0]}:{me[1]};branch=z9hG4bKmt{n}\r\n"
                f"Max-Forwards: 70\r\nFrom: <sip:alice@ims.test>;tag=t{n}\r\n"
                f"To: <sip:bob@ims.test>\r\nCall-ID: mt-{n}\r\nCSeq: 1 OPTIONS\r\n"
                "Content-Length: 0\r\n\r\n"
            ).encode()

        def answer(data: bytes) -> str:
            sock.sendto(data, (host, int(port)))
            return sock.recv(65535).decode()

        first = answer(options(1))
        assert first.startswith("SIP/2.0 403 "), first
        refused = answer(options(2))
        assert refused.startswith("SIP/2.0 503 Service Unavailable (transactions full (1))")
        assert "\r\nRetry-After: 5\r\n" in refused and "Call-ID: mt-2" in refused
        assert answer(options(1)) == first  # the held transaction answers its retransmission
    finally:
        sock.close()
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert b"OPTIONS mt-2 from" in err and b"refused: transactions full (1)" in err, err[-2000:]
