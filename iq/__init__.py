"""Iq: the H.248 (MEGACO text) control link between the IMS-ALG and the IMS-AGW."""
