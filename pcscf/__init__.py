"""P-CSCF (IMS-ALG): SDP model, e2ae rewrite, SIP proxy."""
