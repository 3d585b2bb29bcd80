"""The KMS of TS 33.328 Annex D: users, tickets, MIKEY-TICKET over HTTPS."""
