"""The served OpenAPI document, turned against the server that serves it (schemathesis).

A generated client and a schema fuzzer must agree with the server: for every operation, a few
requests the schema allows and a few it does not, sent by a logged-in user. None may answer
5xx, every error must be problem+json, and every answer must match its declared schema.
Bounded: a fixed number of examples per operation, a fixed seed, and a time budget.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import Server

EXAMPLES = {GenerationMode.POSITIVE: 6, GenerationMode.NEGATIVE: 4}
BUDGET_SECONDS = 120
# Ending the fuzzing user's own session would leave every later operation a 401.
SKIP = {"logout", "websocket"}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def database_url(tmp_path_factory) -> str:
    """SQLite is enough here: the behaviour on both backends is what the other tests pin."""
    return f"sqlite:///{tmp_path_factory.mktemp('db') / 'sup.db'}"


def _fuzz(document: dict[str, Any], base_url: str, token: str) -> list[str]:
    schema = schemathesis.openapi.from_dict(document)
    headers = {"Authorization": f"Bearer {token}"}
    failures: list[str] = []
    deadline = time.monotonic() + BUDGET_SECONDS
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.definition.raw.get("operationId") in SKIP:
            continue
        for mode, examples in EXAMPLES.items():
            if time.monotonic() > deadline:
                failures.append(f"time budget spent before {operation.label} ({mode.value})")
                return failures

            @settings(
                max_examples=examples,
                derandomize=True,  # the same requests on every run
                database=None,
                deadline=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def check(case) -> None:
                response = case.call(base_url=base_url, headers=headers, timeout=30)
                case.validate_response(response, checks=CHECKS)
                if response.status_code >= 400:
                    content_type = response.headers.get("content-type", [""])[0]
                    assert content_type.startswith("application/problem+json"), (
                        f"{case.method} {case.formatted_path}: {response.status_code} as {content_type!r}"
                    )

            try:
                check()
            except Unsatisfiable:  # nothing to make invalid (an operation without parameters or body)
                continue
            except Exception as exc:
                failures.append(f"{operation.label} ({mode.value}): {exc}"[:3000])
    return failures


async def test_no_operation_fails_a_schema_fuzzer(server: Server):
    user = await server.api.register()
    # schemathesis is synchronous and busy: it runs in a process of its own (below), so the
    # server's event loop here never waits for it.
    fuzzer = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.test_schema_fuzz",
        server.url,
        user.access_token,
        cwd=Path(__file__).resolve().parent.parent,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(fuzzer.communicate(), timeout=BUDGET_SECONDS + 120)
    assert fuzzer.returncode == 0, err.decode()[-3000:]
    failures = json.loads(out.decode().strip().splitlines()[-1].removeprefix(RESULT))
    assert not failures, "\n\n".join(failures)


RESULT = "schema fuzz failures: "

if __name__ == "__main__":
    base_url, token = sys.argv[1:3]
    schema_document = schemathesis.openapi.from_url(f"{base_url}/api/v1/openapi.json").raw_schema
    print(RESULT + json.dumps(_fuzz(schema_document, base_url, token)), flush=True)
