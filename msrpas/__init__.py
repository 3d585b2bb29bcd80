"""The MSRP application server of the hop-by-hop model (TR 33.829 §8.3.1.2): it terminates the
TLS-PSK of KMS-keyed MSRP and BFCP streams, resolves the caller's ticket, re-originates the
Ticket Transfer toward the next hop and relays the media between its two legs."""
