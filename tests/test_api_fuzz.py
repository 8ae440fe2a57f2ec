"""Property-based fuzzing of every route of the ledger API (Hypothesis, against the ASGI app in process), and
Schemathesis against a live server: no input reaches a 5xx, errors have the documented body, and nothing is
written unless the reply says a request was created."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest

pytest.importorskip("fastapi")
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from oblivio.api import create_app  # noqa: E402
from oblivio.ledger import workflow  # noqa: E402
from test_api import TOKEN, server  # noqa: E402,F401 - the live server fixture
from test_ledger import BACKENDS, checkpoint, count, database, pool  # noqa: E402,F401 - shared fixtures

from oblivio.ledger.models import Request, StatusChange  # noqa: E402

AUTH = {"Authorization": f"Bearer {TOKEN}"}
FIELDS = ["external_ref", "model_sha256", "model_version", "scenario", "indices", "classes", "reason"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20,
)
interesting_ints = st.sampled_from([0, 1, -1, 2**31 - 1, 2**31, 2**63, -(2**63), 10**30]) | st.integers()
interesting_text = st.text(max_size=40) | st.sampled_from(["\x00", "1", "²", "٣", "a/b", "x[/]", "\x1b[31m", " ", "", "a" * 250])


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory, checkpoint):
    """A TestClient over the ASGI app on a SQLite ledger holding one registered model and one request."""
    from fastapi.testclient import TestClient

    with database("sqlite", tmp_path_factory.mktemp("fuzz")) as db:
        version = workflow.register_model(checkpoint, db=db)
        with TestClient(create_app(db=db, token=TOKEN), raise_server_exceptions=False) as client:
            yield client, db, version


def near_valid(version: dict, pool_ids: list[int]):
    """Bodies one or two edits away from a valid one (so the fuzz reaches the ledger, not only the schema)."""
    base = st.fixed_dictionaries({"external_ref": st.from_regex(workflow.REF_PATTERN, fullmatch=True),
                                  "model_version": st.just(version["id"]),
                                  "indices": st.lists(st.sampled_from(pool_ids), min_size=1, max_size=3, unique=True)})
    edits = st.dictionaries(st.sampled_from(FIELDS), json_values | interesting_ints | interesting_text, max_size=2)
    return st.tuples(base, edits, st.sets(st.sampled_from(FIELDS), max_size=2)).map(
        lambda t: {k: v for k, v in (t[0] | t[1]).items() if k not in t[2]})


def check(reply, db: str, before: tuple[int, int]) -> None:
    assert reply.status_code < 500, (reply.status_code, reply.text[:300])
    if reply.headers.get("content-type", "").startswith("application/json") and reply.status_code >= 400:
        body = reply.json()
        assert isinstance(body.get("detail"), str)
        if reply.status_code == 422:
            assert isinstance(body.get("errors"), list) and body["errors"]
    after = (count(db, Request), count(db, StatusChange))
    if reply.status_code == 201:
        assert after == (before[0] + 1, before[1] + 1)
    else:
        assert after == before, (reply.status_code, reply.text[:200])


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                      HealthCheck.too_slow, HealthCheck.data_too_large])


@FUZZ
@given(data=st.data())
def test_fuzz_post_requests(fuzz_app, pool, data):
    client, db, version = fuzz_app
    body = data.draw(json_values | near_valid(version, pool[:200]), label="body")
    before = (count(db, Request), count(db, StatusChange))
    check(client.post("/requests", json=body, headers=AUTH), db, before)


@FUZZ
@given(raw=st.binary(max_size=300), content_type=st.sampled_from(["application/json", "text/plain", "", "application/x-www-form-urlencoded"]))
def test_fuzz_post_raw_bytes(fuzz_app, raw, content_type):
    client, db, _ = fuzz_app
    before = (count(db, Request), count(db, StatusChange))
    check(client.post("/requests", content=raw, headers=AUTH | ({"Content-Type": content_type} if content_type else {})), db, before)


@FUZZ
@given(segment=interesting_text | interesting_ints.map(str), tail=st.sampled_from(["", "/audit", "/certificate"]),
       by_ref=st.booleans(), query=st.dictionaries(st.sampled_from(["format", "status", "limit", "x"]),
                                                    interesting_text | interesting_ints.map(str), max_size=2),
       authorized=st.sampled_from([True, True, True, False]))
def test_fuzz_get_routes(fuzz_app, segment, tail, by_ref, query, authorized):
    client, db, _ = fuzz_app
    before = (count(db, Request), count(db, StatusChange))
    path = "/requests" + ("/by-ref/" if by_ref else "/") + quote(segment, safe="") + tail
    reply = client.get(path, params=query, headers=AUTH if authorized else {})
    if not authorized:
        assert reply.status_code == 401
    check(reply, db, before)
    check(client.get("/requests", params=query, headers=AUTH), db, before)


@pytest.mark.skipif(shutil.which("st") is None and shutil.which("schemathesis") is None, reason="schemathesis is not installed")
@pytest.mark.parametrize("server", ["sqlite"], indirect=True)
def test_schemathesis_finds_nothing(server, tmp_path):
    """Schemathesis (an OpenAPI fuzzer) with every check against a live `oblivio serve`-equivalent server.

    tests/schemathesis.toml lets POST /requests answer 422 to schema-valid bodies whose samples are not in the
    model's training data (the schema cannot know the dataset); every other check runs as shipped.
    """
    base = server[0]
    st_bin = shutil.which("st") or shutil.which("schemathesis")
    config = Path(__file__).with_name("schemathesis.toml")
    proc = subprocess.run([st_bin, "--config-file", str(config), "run", f"{base}/openapi.json", "--checks", "all",
                           "-H", f"Authorization: Bearer {TOKEN}", "--max-examples", "40", "--seed", "26",
                           "--generation-deterministic"], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "failures" not in proc.stdout.split("SUMMARY")[-1].lower(), proc.stdout[-2000:]
