"""Where data enters (``inbound``: HL7 v2, X12, payment files, FHIR) and where posting
deltas leave for the ERPs (``erp``)."""
