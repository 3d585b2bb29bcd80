"""Write-through for Twisted TCP transports (Twisted edge).

``FileDescriptor.write`` only buffers: the bytes go out on a later reactor pass, after an
``epoll_ctl`` that registers the socket for writing, and another unregisters it once the
buffer is empty. A relay writes one burst per read, and a TLS handshake one flight at a time,
so that is two system calls and a reactor pass for nearly every write. :func:`write` sends at
once what the socket takes, provided the transport has nothing queued (so the order of bytes is
kept), and hands only the rest to the transport: its buffering, producer backpressure, closing
and error handling stay exactly as they are.

A transport that is not Twisted's TCP (no socket or buffer attributes) just gets ``write``.

"Nothing queued" is read from ``FileDescriptor``'s private state: ``_tempDataBuffer`` (the
list ``write`` appends to until the next ``doWrite``) and ``_writeDisconnecting`` (set by
``loseWriteConnection``), beside ``dataBuffer``/``offset``. No public API tells whether a
transport holds unsent bytes (``ITransport`` and ``IConsumer`` have no such query;
``IReactorFDSet.getWriters`` lists every writer of the reactor, too costly per write), nor
that a half-close is pending. tests/accessgw/test_gateway_private.py checks that shape on real TCP
transports, so that a Twisted that changes it fails there rather than reordering bytes here.
"""

from __future__ import annotations

from typing import Any


def write(transport: Any, data: bytes) -> None:
    """Write ``data`` to ``transport``: straight to its socket when nothing is queued before it."""
    try:
        # Private FileDescriptor attributes: see the module docstring.
        idle = (
            transport.connected
            and not transport.disconnecting
            and not transport._writeDisconnecting
            and not transport._tempDataBuffer
            and transport.offset == len(transport.dataBuffer)
        )
        sock = transport.socket if idle else None
    except AttributeError:
        sock = None
    if sock is not None:
        try:
            sent = sock.send(data)
        except OSError:
            # Would block, or the connection is broken: the transport's own write queues the
            # bytes, and its next attempt meets the error and closes the connection as usual.
            sent = 0
        if sent == len(data):
            return
        if sent:
            data = data[sent:]
    transport.write(data)
