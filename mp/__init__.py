"""Mp: the H.248 link between the MRFC and the MRFP (TS 23.333 / TS 29.333 style), a profile
of its own on the iq/ codec, TPKT framing and transaction layer: conference terminations with
their TCP and TLS roles and the TLS-PSK of each stream (3GPP TS 23.334 §5.20.2 as applied to
the MRFC/MRFP)."""
