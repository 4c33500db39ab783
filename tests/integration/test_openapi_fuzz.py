"""GET /openapi.json describes the gateway; schemathesis fuzzes every operation from it.

The real command (``python -m llm_gateway``) runs on a free loopback port serving the
offline mock provider. Each operation gets a bounded number of generated requests,
valid ones and deliberately invalid ones (stateless; no shrinking, no example
database): no answer may be a 5xx, every error must be the OpenAI envelope with the
response's request id, and JSON answers must match the documented schemas.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402

from llm_gateway.handlers.openapi import DOCUMENT  # noqa: E402
from tests.integration.test_cli_and_mock import CLEAN_ENV, free_port  # noqa: E402

EXAMPLES = 25  # per operation and mode: 11 operations x 2 modes, well under 30 s in all
ERROR_FIELDS = {"message", "type", "param", "code", "request_id"}


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    port = free_port()
    env = {**CLEAN_ENV, "LOG_LEVEL": "warning", "LEDGER_PATH": str(tmp / "ledger.sqlite3"),
           "CLIENT_BODY_TIMEOUT": "5"}
    proc = subprocess.Popen([sys.executable, "-m", "llm_gateway", "--port", str(port)], env=env, cwd=str(tmp),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            if proc.poll() is not None:
                raise AssertionError(f"gateway exited: {proc.stderr.read().decode()[-2000:]}")
            try:
                with urllib.request.urlopen(url + "/healthz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def test_openapi_document_is_served(base_url: str) -> None:
    with urllib.request.urlopen(base_url + "/openapi.json") as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("application/json")
        doc = orjson.loads(r.read())
    assert doc == orjson.loads(orjson.dumps(DOCUMENT))
    assert doc["openapi"].startswith("3.1")
    for path in ("/v1/chat/completions", "/v1/models", "/api/query", "/api/status", "/v1/gateway/query",
                 "/v1/gateway/cost-estimate", "/v1/gateway/usage", "/v1/gateway/requests", "/healthz",
                 "/metrics"):
        assert path in doc["paths"], path
    assert doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert doc["paths"]["/healthz"]["get"]["security"] == []
    assert doc["paths"]["/v1/chat/completions"]["post"]["security"][0] == {"bearerAuth": []}
    chat = doc["paths"]["/v1/chat/completions"]["post"]["responses"]
    assert {"400", "401", "429"} <= set(chat)


SCHEMA = schemathesis.openapi.from_dict(DOCUMENT)
OPERATIONS = [r.ok() for r in SCHEMA.get_all_operations()]
# invalid inputs only exist for operations that take a body or parameters
CASES = [pytest.param(op, mode, id=f"{op.label}-{mode}") for op in OPERATIONS for mode in ("positive", "negative")
         if mode == "positive" or op.body or list(op.iter_parameters())]


def header(response, name: str) -> str:
    values = response.headers.get(name.lower()) or [""]
    return values[0]


def check_response(case, response) -> None:
    where = f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"
    assert response.status_code < 500, where
    if response.status_code >= 400:
        assert header(response, "Content-Type").startswith("application/json"), where
        body = response.json()
        assert set(body) == {"error"} and ERROR_FIELDS <= set(body["error"]), where
        assert isinstance(body["error"]["message"], str) and body["error"]["message"], where
        assert body["error"]["request_id"] == header(response, "X-Request-ID"), where
        assert "Traceback" not in response.text, where


@pytest.mark.parametrize("operation, mode", CASES)
def test_fuzz_operation(base_url: str, operation, mode: str) -> None:
    generation = schemathesis.GenerationMode(mode)

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=generation))
    def run(case) -> None:
        response = case.call(base_url=base_url, timeout=15)
        check_response(case, response)
        if mode == "positive" and response.status_code < 300 and operation.label in (
                "POST /v1/chat/completions", "GET /v1/models", "GET /healthz"):
            if header(response, "Content-Type").startswith("application/json"):
                case.validate_response(response, checks=[schemathesis.checks.response_schema_conformance])

    run()

