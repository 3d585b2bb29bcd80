"""The MRFP, the media processor of a conference: TCP and TLS-PSK terminations on the MRFC's
instructions over Mp, an MSRP chat room and a BFCP floor control server."""
