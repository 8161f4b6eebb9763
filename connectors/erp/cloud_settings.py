"""Settings of the cloud ERP adapters (``RCMFLOW_ERP_NETSUITE_*``, ``_ODOO_*``, ``_ERPNEXT_*``).

Kept apart from ``rcmflow.runtime.settings.Settings`` for now; the fields are meant to move
there as they are (same names, same ``RCMFLOW_`` variables).
The general ERP limits (``erp_timeout_s``, ``erp_batch_max``, ...) stay in ``Settings``.
Secrets are ``SecretStr``: never printed, never logged.
"""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["CloudErpSettings"]


class CloudErpSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RCMFLOW_ERP_", frozen=True, extra="ignore")

    # -- NetSuite (SuiteTalk REST) ---------------------------------------------------------
    netsuite_url: str = Field(
        "", description="REST base, e.g. https://<account-id>.suitetalk.api.netsuite.com.")
    netsuite_token: SecretStr | None = Field(
        None, description="OAuth 2.0 access token (machine-to-machine / client credentials "
        "flow), sent as `Authorization: Bearer`. An expired token answers 401: exit 3.")
    netsuite_subsidiaries: dict[str, str] = Field(
        {}, description="Entity -> NetSuite subsidiary internal id (JSON); unset entities: "
        "netsuite_subsidiary.")
    netsuite_subsidiary: str = Field("1", description="Default subsidiary internal id.")
    # -- Odoo (JSON-2, Odoo 19+) -----------------------------------------------------------
    odoo_url: str = Field("", description="Odoo base URL, e.g. https://erp.example.com.")
    odoo_db: str = Field("", description="Database (X-Odoo-Database); empty: not sent.")
    odoo_api_key: SecretStr | None = Field(
        None, description="API key of a dedicated bot user (`Authorization: bearer`). It "
        "needs accounting rights and create/read on ir.model.data (the duplicate guard).")
    odoo_journal: str = Field("MISC", description="Code of the Odoo journal posted to.")
    odoo_xmlid_module: str = Field(
        "rcmflow", pattern=r"^[a-z0-9_]+$",
        description="ir.model.data module of the posting-id keys (UNIQUE(module, name)).")
    # -- ERPNext (Frappe REST) -------------------------------------------------------------
    erpnext_url: str = Field("", description="Frappe site URL, e.g. https://erp.example.com.")
    erpnext_api_key: SecretStr | None = Field(None, description="API key of the API user.")
    erpnext_api_secret: SecretStr | None = Field(None, description="Its API secret.")
    erpnext_company: str = Field("", description="Default ERPNext company name.")
    erpnext_companies: dict[str, str] = Field(
        {}, description="Entity -> ERPNext company name (JSON); unset: erpnext_company.")
    erpnext_posting_field: str = Field(
        "rcm_posting_id", pattern=r"^[a-z][a-z0-9_]*$",
        description="Custom Field on Journal Entry holding the posting id; it must be "
        "marked Unique (a DB unique index): the adapter refuses to start otherwise.")
    # -- all three -------------------------------------------------------------------------
    cloud_page_size: int = Field(
        200, ge=1, le=1000, description="Rows per page when reading a journal back.")
    cloud_batch_max: int = Field(
        50, ge=1, le=1000, description="Deltas per post_batch call (one request each).")
