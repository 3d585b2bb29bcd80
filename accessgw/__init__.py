"""IMS Access Gateway: certificate TLS towards the UE with fingerprint pinning, TCP relay."""
