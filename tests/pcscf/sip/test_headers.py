"""pcscf.sip.headers: a Via whose sent-by host holds a character no host can is refused."""

from __future__ import annotations

import pytest

from pcscf.sip.errors import RemoteSipError
from pcscf.sip.headers import Via


@pytest.mark.parametrize("host", ['"', 'a"b', "a<b", "a,b", "a\\b"])
def test_a_via_whose_host_holds_what_no_host_can_is_400(host: str) -> None:
    # e.g. a quote: once ;received= follows, the text would read back as another branch
    with pytest.raises(RemoteSipError) as info:
        Via.parse(f"SIP/2.0/UDP {host};branch=z9hG4bK1")
    assert info.value.status == 400 and "Bad host" in info.value.reason
