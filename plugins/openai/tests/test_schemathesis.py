"""schemathesis over the server's /openapi.json: generated requests (valid and invalid) for
every operation, a bounded number each; no reply may be a 5xx, and each must be JSON or SSE."""
from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

EXAMPLES = 15  # per operation


@pytest.fixture(scope="module")
def short_server(start_server):
    """A short context bounds what any generated request can cost."""
    return start_server(llm_options={"max_model_len": 48})


def test_openapi_fuzz_no_server_errors(short_server):
    url = short_server.url
    schema = schemathesis.openapi.from_url(url + "/openapi.json")
    operations = [op.ok() for op in schema.get_all_operations()]
    labels = {op.label for op in operations}
    assert {"POST /v1/completions", "POST /v1/chat/completions", "GET /v1/models",
            "POST /tokenize", "POST /detokenize", "GET /health"} <= labels
    failures = []
    for op in operations:
        @given(case=op.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        def run(case):
            response = case.call(base_url=url, timeout=30)
            if response.status_code >= 500:
                failures.append((op.label, case.body, response.status_code, response.text[:300]))
            elif response.status_code != 200:
                assert set(response.json()["error"]) == {"message", "type", "param", "code"}
        run()
    assert not failures, failures
