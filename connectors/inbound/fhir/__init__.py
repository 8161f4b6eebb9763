"""FHIR R4 inbound: ChargeItem, PaymentReconciliation, PaymentNotice -> canonical events.

``process_fhir`` reads a file (one resource, a Bundle, or NDJSON) without any I/O;
``ingest_fhir_files`` publishes it (`rcmflow ingest fhir`). See the README section
"Inbound: FHIR".
"""

from rcmflow.connectors.inbound.fhir.ingest import (
           FhirLimits,
           FhirOutcome,
           Rejected,
           ingest_fhir_files,
           process_fhir,
)
from rcmflow.connectors.inbound.fhir.mapping import Mapped, MappingOptions, Problem, map_resource
from rcmflow.connectors.inbound.fhir.values import (
           DEFAULT_ACCOUNT_SYSTEMS,
           FhirValueError,
           money_cents,
           read_json,
)

__all__ = ["FhirLimits", "FhirOutcome", "Rejected", "ingest_fhir_files", "process_fhir",
           "Mapped", "MappingOptions", "Problem", "map_resource", "DEFAULT_ACCOUNT_SYSTEMS",
           "FhirValueError", "money_cents", "read_json"]
