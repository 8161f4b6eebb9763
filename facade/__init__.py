"""FHIR R4 read API for patient portals (issue 5)."""
