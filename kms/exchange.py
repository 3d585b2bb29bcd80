"""One MIKEY exchange with the KMS over a :class:`~kms.link.KmsLink` (Twisted edge): the
HTTPS POST runs in a thread (it blocks), the reply is opened and checked by
:func:`kms.client.open_reply`.

Used by every element that asks the KMS (the MSRP AS, the list server, the MRFC); each turns
:class:`KmsUnreachable` into its own answer (a SIP error, a message kept for later).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet import threads

from kms import client as kms_client
from kms.link import KmsLink
from mikey.message import Message as MikeyMessage
from mikey.payloads import KeyData

#: ``post(address, pin, cert, key_file, body, timeout) -> (status, body)``: by default
#: :func:`kms.cli.post`; tests give their own.
Post = Callable[[tuple[str, int], Any, Path, Path, bytes, float], tuple[int, bytes]]


class KmsUnreachable(Exception):
    """The exchange failed below MIKEY: no connection, a TLS or HTTP failure, a timeout."""


async def exchange(
    link: KmsLink, request: MikeyMessage, post: Post
) -> tuple[MikeyMessage, tuple[KeyData, ...]]:
    """Send ``request`` to the KMS of ``link`` and return its reply and the keys it carries.
    Raises :class:`KmsUnreachable`, or :class:`~mikey.errors.MikeyError` for a reply that
    does not verify or that reports an error."""
    try:
        _, body = await threads.deferToThread(
            post, link.address, link.pin, link.cert, link.key_file, request.encode(), link.timeout
        )
    except Exception as exc:
        raise KmsUnreachable(f"{type(exc).__name__}: {exc}") from None
    return kms_client.open_reply(body, link.key, request)


__all__ = ["KmsUnreachable", "Post", "exchange"]
