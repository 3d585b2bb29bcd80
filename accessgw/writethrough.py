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

The function is :func:`iq.link.write_through`, which the Iq link uses for its replies too
(``iq`` is below ``accessgw``, so it lives there).
"""

from __future__ import annotations

from iq.link import write_through as write

__all__ = ["write"]
