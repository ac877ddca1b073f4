"""Fuzz the API from its own OpenAPI schema (schemathesis): whatever a client sends, valid or
not, and in whatever order (the stateful test chains operations through the links schemathesis
infers, e.g. POST a surface, then read, cancel or delete it), the answer is never a 5xx.
Bounded in examples per operation and in time."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import not_a_server_error

from api.app import create_app
from tests.api.test_api import tiny_settings

# schemathesis collects cases at import time, so the app (no workers: nothing runs) is built
# here, on a throwaway data folder.
_DATA = Path(tempfile.mkdtemp(prefix="landscape-fuzz-"))
atexit.register(shutil.rmtree, _DATA, ignore_errors=True)
app = create_app(tiny_settings(_DATA, max_upload_bytes=100_000))
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.mark.timeout(600)
@schema.parametrize()
@hypothesis_settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_no_server_errors(case: schemathesis.Case) -> None:
    case.call_and_validate(checks=[not_a_server_error])


class StatefulAPI(schema.as_state_machine()):  # type: ignore[misc]
    """Sequences of calls; every answer is checked for 5xx."""

    def validate_response(  # type: ignore[no-untyped-def]
        self, response, case, additional_checks=(), **kwargs
    ) -> None:
        case.validate_response(response, checks=[not_a_server_error])


TestStatefulAPI = StatefulAPI.TestCase
TestStatefulAPI.settings = hypothesis_settings(
    max_examples=40,
    stateful_step_count=6,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
