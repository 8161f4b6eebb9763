"""Code tables the X12 mapping needs: claim filing indicators and denial CARCs."""

from __future__ import annotations

__all__ = ["DENIAL_CARCS", "FILING_PAYER_CLASS", "payer_class_for"]

#: CLP06 / SBR09 claim filing indicator -> the chart of accounts' payer classes
#: (contractual adjustments post by payer class). Unknown codes give no class: the
#: contractual line then goes to suspense with an exception record, never silently.
FILING_PAYER_CLASS = {
    "MA": "MEDICARE", "MB": "MEDICARE", "16": "MEDICARE",
    "MC": "MEDICAID",
    "HM": "MANAGED_CARE", "12": "MANAGED_CARE", "13": "MANAGED_CARE", "14": "MANAGED_CARE",
    "CI": "COMMERCIAL", "BL": "COMMERCIAL", "15": "COMMERCIAL", "AM": "COMMERCIAL",
    "LM": "COMMERCIAL", "WC": "COMMERCIAL", "DS": "COMMERCIAL",
    # CH (TRICARE), VA, OF (other federal) and the rest have no class of their own in the
    # shipped chart: left unmapped on purpose, so finance sees them in suspense.
}

#: A claim paid 0 with one of these (group, CARC) is a denial, whatever CLP02 says
#: (CLP02 = 4 is a denial by itself). Medical necessity, missing information, timely
#: filing, authorisation, coverage and non-covered services.
DENIAL_CARCS = frozenset(
    (group, reason)
    for group in ("CO", "PI", "OA")
    for reason in ("4", "16", "26", "27", "29", "31", "50", "96", "109", "147", "176", "197",
                   "204", "B7", "N30")
)


def payer_class_for(filing_code: str) -> str | None:
    return FILING_PAYER_CLASS.get(filing_code)
