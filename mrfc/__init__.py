"""The MRFC, the conference focus: SIP toward the participants, MIKEY-TICKET for their
KMS-keyed streams, and the MRFP's terminations over Mp."""
