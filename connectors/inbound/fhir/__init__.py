"""FHIR R4 inbound: ChargeItem, PaymentReconciliation, PaymentNotice -> canonical events.

``process_fhir`` reads a file (one resource, a Bundle, or NDJSON) without any I/O;
``ingest_fhir_files`` publishes it (`rcmflow ingest fhir`). See the README section
"Inbound: FHIR".
"""

from rcmflow.connectors.inbound.exceptions import FhirValueError

from .ingest import FhirLimits, FhirOutcome, Rejected, ingest_fhir_files, process_fhir
from .mapping import Mapped, MappingOptions, Refused, map_resource
from .values import DEFAULT_ACCOUNT_SYSTEMS, read_json

__all__ = ["FhirLimits", "FhirOutcome", "Rejected", "ingest_fhir_files", "process_fhir",
           "Mapped", "MappingOptions", "Refused", "map_resource", "DEFAULT_ACCOUNT_SYSTEMS",
           "FhirValueError", "read_json"]
