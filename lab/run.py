"""``e2ae run --config FILE.toml``: start the nodes of a lab topology, each as its own process.

A topology file has one table per node kind: ``[core]``, ``[pcscf]``, ``[accessgw]`` (any
subset) and any number of ``[[ue]]``. Each key of a node's table is a flag of that node's own
subcommand (``e2ae core``, ``e2ae pcscf``, ``e2ae accessgw``, ``e2ae ue``): ``next_hop =
"127.0.0.1:5080"`` becomes ``--next-hop 127.0.0.1:5080``, ``echo = true`` becomes ``--echo``, a
list repeats the flag. What ``run`` fills in when it is absent:

- ``[accessgw]`` ``cert``/``key``: a fresh certificate in a temporary directory; ``alg``: the
  ``[pcscf]`` ``iq`` address;
- Iq between ``[pcscf]`` and ``[accessgw]``: mutual-certificate TLS with pinned peers. When
  neither table says how Iq is secured (no ``iq_tls``, ``iq_cert``, ``iq_peer(s)`` or
  ``iq_insecure``), ``run`` makes an Iq certificate for each of the two, pins each one's
  fingerprint in the other (``--iq-tls PREFIX --iq-peer FP``) and keeps the keys in the
  temporary directory. Plain TCP only when ``[pcscf]`` says ``iq_insecure = true`` (the
  P-CSCF then needs its ``iq_allow`` list; ``run`` passes ``--iq-insecure`` to the AGW too);
- ``[pcscf]`` ``next_hop``: the ``[core]`` ``sip`` address;
- ``[[ue]]`` ``pcscf``: the ``[pcscf]`` ``gm`` address.

Nodes start in the order core, pcscf, accessgw, ue; each must print its first line (its
addresses) within ``--start-timeout`` seconds before the next one starts. Then ``run`` prints
``run: all nodes up`` and waits. SIGINT or SIGTERM stops every node (SIGTERM, then SIGKILL after
10 s) in reverse order; ``run`` exits 0 if it was asked to stop, 1 if a node failed to start or
died on its own. Node logs go to standard error, their standard output lines are prefixed with
the node name.
"""

from __future__ import annotations

import datetime
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

from e2ae.tomlfile import TomlFileError, read_toml

ORDER = ("core", "pcscf", "accessgw", "ue")


class TopologyError(ValueError):
    """A topology file that cannot be run (names the file, the node and the key)."""


def load(path: Path) -> dict[str, Any]:
    try:
        data = read_toml(path, "topology")
    except TomlFileError as exc:
        raise TopologyError(str(exc)) from exc
    unknown = sorted(set(data) - set(ORDER))
    if unknown:
        raise TopologyError(f"{path}: unknown node kind(s) {', '.join(unknown)}")
    for kind in ("core", "pcscf", "accessgw"):
        if kind in data and not isinstance(data[kind], dict):
            raise TopologyError(f"{path}: [{kind}] must be a table")
    if "ue" in data and not (
        isinstance(data["ue"], list) and all(isinstance(u, dict) for u in data["ue"])
    ):
        raise TopologyError(f"{path}: UEs are [[ue]] tables")
    return data


def flags(table: dict[str, Any]) -> list[str]:
    """``{"next_hop": "h:p", "echo": True, "message": ["a", "b"]}`` -> command-line flags."""
    out: list[str] = []
    for key, value in table.items():
        flag = "--" + key.replace("_", "-")
        values = value if isinstance(value, list) else [value]
        for item in values:
            if item is True:
                out.append(flag)
            elif item is False:
                continue
            else:
                out += [flag, str(item)]
    return out


def plan(topology: dict[str, Any], base: Path, workdir: Path) -> list[tuple[str, list[str]]]:
    """The (name, e2ae arguments) of every node, in start order."""
    nodes: list[tuple[str, list[str]]] = []
    core = dict(topology.get("core", {}))
    pcscf = dict(topology.get("pcscf", {}))
    agw = dict(topology.get("accessgw", {}))
    if core:
        nodes.append(("core", ["core", *flags(core)]))
    if "pcscf" in topology:
        if "next_hop" not in pcscf and "sip" in core:
            pcscf["next_hop"] = core["sip"]
        for key in ("policy", "config", "iq_tls", "iq_keylog"):
            if isinstance(pcscf.get(key), str):
                pcscf[key] = str(base / str(pcscf[key]))
    if "pcscf" in topology and "accessgw" in topology:
        _secure_iq(pcscf, agw, workdir)
    if "pcscf" in topology:
        nodes.append(("pcscf", ["pcscf", *flags(pcscf)]))
    if "accessgw" in topology:
        if "alg" not in agw and "iq" in pcscf:
            agw["alg"] = pcscf["iq"]
        if "cert" not in agw:
            import certs

            pair = certs.generate("agw", now=datetime.datetime.now(datetime.UTC))
            cert_path, key_path = certs.write(pair, workdir)
            agw["cert"], agw["key"] = str(cert_path), str(key_path)
        for key in ("cert", "key", "keylog", "config", "iq_tls", "iq_cert", "iq_key", "iq_keylog"):
            if isinstance(agw.get(key), str):
                agw[key] = str(base / str(agw[key]))
        nodes.append(("accessgw", ["accessgw", *flags(agw)]))
    for ue in topology.get("ue", []):
        ue = dict(ue)
        if "pcscf" not in ue and "gm" in pcscf:
            ue["pcscf"] = pcscf["gm"]
        if "user" not in ue:
            raise TopologyError("[[ue]] needs a user")
        nodes.append((f"ue {ue['user']}", ["ue", *flags(ue)]))
    return nodes


#: Keys by which a topology says how its Iq link is secured.
IQ_SECURITY_KEYS = ("iq_tls", "iq_cert", "iq_key", "iq_peer", "iq_peers", "iq_insecure")


def _secure_iq(pcscf: dict[str, Any], agw: dict[str, Any], workdir: Path) -> None:
    """Iq between the two nodes over mutual TLS with each certificate pinned in the other."""
    if any(key in table for table in (pcscf, agw) for key in IQ_SECURITY_KEYS):
        if pcscf.get("iq_insecure") is True and "iq_tls" not in agw and "iq_cert" not in agw:
            agw.setdefault("iq_insecure", True)
        return
    import certs

    now = datetime.datetime.now(datetime.UTC)
    alg = certs.generate("pcscf-iq", now=now)
    gateway = certs.generate("agw-iq", now=now)
    for pair, table, peer in ((alg, pcscf, gateway), (gateway, agw, alg)):
        cert_path, _ = certs.write(pair, workdir)
        table["iq_tls"] = str(cert_path.with_suffix(""))
        table["iq_peer"] = peer.fingerprint("sha-256").value


def _first_line(proc: subprocess.Popen[str], timeout: float) -> str | None:
    assert proc.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    try:
        if not selector.select(timeout):
            return None
        line = proc.stdout.readline()
        return line.rstrip("\n") or None
    finally:
        selector.close()


def _forward(name: str, stream: IO[str]) -> None:
    for line in stream:
        print(f"{name}: {line.rstrip()}", flush=True)


def main(config: Path, *, start_timeout: float = 20.0) -> int:
    try:
        topology = load(config)
    except TopologyError as exc:
        print(f"e2ae run: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    procs: list[tuple[str, subprocess.Popen[str]]] = []
    failed = False
    with tempfile.TemporaryDirectory(prefix="e2ae-run-") as tmp:
        try:
            nodes = plan(topology, config.resolve().parent, Path(tmp))
        except TopologyError as exc:
            print(f"e2ae run: {exc}", file=sys.stderr)
            return 2
        try:
            for name, args in nodes:
                if stop.is_set():
                    break
                proc = subprocess.Popen(
                    [sys.executable, "-m", "lab.cli", *args],
                    stdout=subprocess.PIPE,
                    text=True,
                    env=env,
                )
                procs.append((name, proc))
                line = _first_line(proc, start_timeout)
                if line is None:
                    print(f"e2ae run: {name} did not start", file=sys.stderr)
                    failed = True
                    break
                print(f"run: {name} up: {line}", flush=True)
                assert proc.stdout is not None
                threading.Thread(target=_forward, args=(name, proc.stdout), daemon=True).start()
            if not failed and not stop.is_set():
                print(f"run: all nodes up ({len(procs)})", flush=True)
            while not failed and not stop.is_set():
                for name, proc in procs:
                    code = proc.poll()
                    if code is not None and not (name.startswith("ue ") and code == 0):
                        print(f"e2ae run: {name} exited ({code})", file=sys.stderr)
                        failed = True
                stop.wait(0.2)
        finally:
            for _, proc in reversed(procs):
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 10
            for _, proc in reversed(procs):
                try:
                    proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            print("run: stopped", flush=True)
    return 1 if failed else 0
