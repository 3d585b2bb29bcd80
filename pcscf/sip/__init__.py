"""SIP for the P-CSCF (and the lab's UE/core simulators): message model, parser, registrar,
the RFC 3261 transaction layer, and the transaction-stateful proxy core. Pure: no sockets, no
reactor, time is a parameter."""

from pcscf.sip.errors import LocalSipError, RemoteSipError, SipError
from pcscf.sip.headers import SecurityMechanism, Via, canonical, media_mechanisms, split_list
from pcscf.sip.media import DialogId, Forward, MediaContext, MediaResult, Reject, UeInfo
from pcscf.sip.message import (
    MessageError,
    Request,
    Response,
    StreamParser,
    make_request,
    make_response,
    parse_datagram,
)
from pcscf.sip.registrar import Binding, Flow, Registrar
from pcscf.sip.uri import NameAddr, SipUri

__all__ = [
    "Binding",
    "DialogId",
    "Flow",
    "Forward",
    "LocalSipError",
    "MediaContext",
    "MediaResult",
    "MessageError",
    "NameAddr",
    "Registrar",
    "Reject",
    "RemoteSipError",
    "Request",
    "Response",
    "SecurityMechanism",
    "SipError",
    "SipUri",
    "StreamParser",
    "UeInfo",
    "Via",
    "canonical",
    "make_request",
    "make_response",
    "media_mechanisms",
    "parse_datagram",
    "split_list",
]
