"""X12 inbound: 835 remittances and 837 claims -> canonical events.

``process_x12`` reads and checks a file without any I/O; ``ingest_x12_files`` publishes it;
``watch`` runs the drop folder. See the README section "Inbound: X12 and payment files".
"""

from rcmflow.connectors.inbound.x12.ingest import FileOutcome, SetOutcome, X12Limits, process_x12
from rcmflow.connectors.inbound.x12.reader import Problem

__all__ = ["FileOutcome", "SetOutcome", "X12Limits", "Problem", "process_x12"]
