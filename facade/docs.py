"""API docs pages (Swagger UI at BASE/docs, ReDoc at BASE/redoc) whose every asset is served
by the facade itself: hospital networks block CDNs, and a page that loads code from elsewhere
runs that code next to the bearer tokens typed into it.

The assets come from fastapi-offline's package data (Swagger UI and ReDoc bundles, refreshed
with each release). Page URLs are relative, so the pages work under any prefix a reverse
proxy adds, and name no host.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse

__all__ = ["install_docs", "ASSETS_DIR"]

ASSETS_DIR = Path(fastapi_offline.__file__).parent / "static"
_TITLE = "rcmflow FHIR facade"


def install_docs(app: FastAPI, base: str) -> None:
    """BASE/docs, BASE/redoc and their assets under BASE/docs-assets/."""
    app.mount(f"{base}/docs-assets", StaticFiles(directory=ASSETS_DIR), name="docs-assets")

    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="openapi.json", title=f"{_TITLE} - Swagger UI",
            swagger_js_url="docs-assets/swagger-ui-bundle.js",
            swagger_css_url="docs-assets/swagger-ui.css",
            swagger_favicon_url="docs-assets/favicon.png",
            # Swagger UI would otherwise send the schema to validator.swagger.io for a badge.
            swagger_ui_parameters={"validatorUrl": None})

    async def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url="openapi.json", title=f"{_TITLE} - ReDoc",
                              redoc_js_url="docs-assets/redoc.standalone.js",
                              redoc_favicon_url="docs-assets/favicon.png",
                              with_google_fonts=False)

    app.add_api_route(f"{base}/docs", swagger_ui, methods=["GET"], include_in_schema=False)
    app.add_api_route(f"{base}/redoc", redoc, methods=["GET"], include_in_schema=False)
