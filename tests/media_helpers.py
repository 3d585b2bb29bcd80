"""What the P-CSCF's media hook is handed, for tests of the e2ae call table and its handler."""

from __future__ import annotations

from pcscf.sip.media import DialogId, MediaContext, UeInfo

#: The mechanisms a UE registered with in these tests (Security-Client).
MECHS = frozenset({"msrp-tls", "bfcp-tls"})


def media_context(
    dialog: DialogId, kind: str, from_ue: bool, mechanisms: frozenset[str] = MECHS
) -> MediaContext:
    """An INVITE's offer (from the UE or towards it), or its 200's answer, for a registered UE."""
    return MediaContext(
        dialog,
        kind,  # type: ignore[arg-type]
        "INVITE",
        None if kind == "offer" else 200,
        True,
        from_ue,
        UeInfo(True, mechanisms=mechanisms),
        1,
    )
