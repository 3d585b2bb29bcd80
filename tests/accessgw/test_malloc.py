"""Fixed malloc thresholds for the AGW process (accessgw.malloc) and their configuration."""

from __future__ import annotations

import ctypes
import subprocess
import sys
from pathlib import Path

import pytest

from accessgw.config import AgwConfig
from accessgw.errors import LocalAccessGwError

REPO = Path(__file__).resolve().parents[2]

# Run in a fresh process (the setting is process-wide): how many mmapped chunks does one
# allocation of 600 KB add? glibc's default threshold (128 KiB) maps it; ours keeps it on the heap.
_PROBE = """
import ctypes, sys
sys.path.insert(0, {repo!r})
class Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split())]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Mallinfo2
if {tune}:
    from accessgw.malloc import tune_malloc
    assert tune_malloc()
before = libc.mallinfo2().hblks
block = bytearray(600_000)
print(libc.mallinfo2().hblks - before)
"""


def _glibc() -> bool:
    try:
        return hasattr(ctypes.CDLL(None), "mallinfo2")
    except OSError:
        return False


@pytest.mark.skipif(not _glibc(), reason="glibc (mallinfo2) only")
@pytest.mark.parametrize(("tune", "mapped"), [(False, 1), (True, 0)])
def test_tuning_keeps_read_sized_buffers_on_the_heap(tune: bool, mapped: int) -> None:
    code = _PROBE.format(repo=str(REPO), tune=tune)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout) == mapped


def _values(**extra: object) -> dict[str, object]:
    return {
        "alg": "127.0.0.1:2944",
        "access_ip": "127.0.0.1",
        "core_ip": "127.0.0.1",
        "cert": "agw.crt",
        "key": "agw.key",
        **extra,
    }


def test_malloc_tuning_setting() -> None:
    assert AgwConfig.from_values(_values()).malloc_tuning is True
    assert AgwConfig.from_values(_values(malloc_tuning=False)).malloc_tuning is False
    with pytest.raises(LocalAccessGwError, match="malloc_tuning must be true or false"):
        AgwConfig.from_values(_values(malloc_tuning="no"))
