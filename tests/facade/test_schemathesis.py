"""OpenAPI-driven fuzzing: whatever the generated request, no 5xx, and every FHIR body valid.

Bounded: a few dozen examples per operation (17 operations), in-process, well under a minute.
"""

from __future__ import annotations

import atexit
import tempfile
from pathlib import Path
from typing import Any

import orjson
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error

from tests.facade.conftest import (
    bearer,
    build_tables,
    check_resource,
    filled_store,
    make_app,
    world_events,
)

EXAMPLES_PER_OPERATION = 30

# Schemathesis needs the schema when tests are collected, before fixtures exist: the app gets
# a read model of its own, filled the same way as the fixtures' one.
_dir = tempfile.TemporaryDirectory(prefix="facade-schemathesis-")
atexit.register(_dir.cleanup)
_app = make_app(filled_store(Path(_dir.name) / "read.sqlite", build_tables(world_events())))
schema = schemathesis.openapi.from_asgi("/fhir/openapi.json", _app)


@schema.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None,
          phases=[Phase.explicit, Phase.generate],
          suppress_health_check=list(HealthCheck))
def test_no_server_errors_and_valid_fhir(case: Any) -> None:
    response = case.call_and_validate(headers=bearer(), checks=[not_a_server_error])
    assert response.status_code < 500
    kind = response.headers.get("content-type", [""])
    if (kind[0] if isinstance(kind, list) else kind).startswith("application/fhir+json") \
            and response.content:
        check_resource(orjson.loads(response.content))
