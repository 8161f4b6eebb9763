"""Inbound: formats in (HL7 v2 over MLLP, X12 835/837, payment files, FHIR), canonical
events out to rcm.events, raw records and DLQ records beside them."""
