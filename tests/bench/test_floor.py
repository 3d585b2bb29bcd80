"""bench/floor.py on its own: the echo process over a real socket (the relay is run through
``bench/cps.py --floor`` in tests/bench/test_cps.py)."""

from __future__ import annotations

import socket
import struct
import subprocess
import sys

from tests.conftest import REPO


def test_the_floor_echo_answers_each_frame_with_the_size_asked_for() -> None:
    """bench/floor.py's echo over a real socket: frames split across writes, several in one."""
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "bench" / "floor.py"), "echo"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline().strip().rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            frames = b"".join(
                struct.pack("!HH", size, reply) + b"q" * (size - 2)
                for size, reply in ((986, 525), (294, 89), (122, 387))
            )
            conn.sendall(frames[:500])
            conn.sendall(frames[500:])
            got = b""
            while len(got) < (2 + 525) + (2 + 89) + (2 + 387):
                chunk = conn.recv(65536)
                assert chunk
                got += chunk
        lengths = []
        while got:
            (length,) = struct.unpack_from("!H", got)
            lengths.append(length)
            got = got[2 + length :]
        assert lengths == [525, 89, 387]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
