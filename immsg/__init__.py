"""KMS-protected immediate messaging (TR 33.829 §8.3.1.1): the SIP MESSAGE body that carries a
MIKEY TRANSFER_INIT and the MIME content protected with a key from the ticket's GTGK, as CMS
AuthEnvelopedData (RFC 5652, RFC 5083) with a KEKRecipientInfo. Pure: bytes in, bytes out."""
