"""The ledger's HTTP API over a real uvicorn on 127.0.0.1 (random free port), queried with httpx."""
from __future__ import annotations

import socket
import threading
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

import uvicorn  # noqa: E402

from oblivio import OblivioError  # noqa: E402
from oblivio.api import create_app  # noqa: E402
from oblivio.ledger import workflow  # noqa: E402
from test_ledger import BACKENDS, checkpoint, cli, database, pool  # noqa: E402,F401 - shared fixtures

TOKEN = "test-token-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module", params=BACKENDS)
def server(request, tmp_path_factory, checkpoint):
    """(base URL, database URL, registered model version) of a live API server."""
    with database(request.param, tmp_path_factory.mktemp("api")) as db:
        version = workflow.register_model(checkpoint, db=db)
        port = free_port()
        srv = uvicorn.Server(uvicorn.Config(create_app(db=db, token=TOKEN), host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=srv.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not srv.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}", db, version
        srv.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server[0], headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as c:
        yield c


def test_auth_is_required_and_checked(server):
    base = server[0]
    with httpx.Client(base_url=base, timeout=30) as anon:
        assert anon.get("/health").json()["status"] == "ok"
        openapi = anon.get("/openapi.json").json()
        assert "/requests" in openapi["paths"] and "/requests/{key}/audit" in openapi["paths"]
        missing = anon.get("/requests/1")
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert anon.post("/requests", json={}).status_code == 401
        assert anon.get("/requests/1", headers={"Authorization": "Bearer wrong-token"}).status_code == 403
        assert anon.get("/requests/1", headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401


def test_bad_bodies_get_422_with_a_clear_message(client, server, pool):
    sha = server[2]["weights_sha256"]
    third = min(set(range(len(pool) + 200)) - set(pool))
    cases = [
        ({"model_sha256": sha, "indices": [pool[0]]}, "external_ref: Field required"),
        ({"external_ref": "X", "indices": [pool[0]]}, "give exactly one of model_sha256 and model_version"),
        ({"external_ref": "X", "model_sha256": "abc", "indices": [pool[0]]}, "model_sha256: String should match pattern"),
        ({"external_ref": "X", "model_sha256": sha, "indices": ["one"]}, "indices.0: Input should be a valid integer"),
        ({"external_ref": "X", "model_sha256": sha, "indices": [99999]}, "forget indices out of range [99999]"),
        ({"external_ref": "X", "model_sha256": sha, "indices": [third]}, "held-out third-party pool"),
        ({"external_ref": "X", "model_sha256": sha, "scenario": "class", "classes": [42]}, "unknown class 42"),
        ({"external_ref": "X", "model_sha256": sha, "indices": [pool[0]], "admin": True}, "admin: Extra inputs are not permitted"),
    ]
    for body, message in cases:
        r = client.post("/requests", json=body)
        assert r.status_code == 422, (body, r.text)
        assert message in r.json()["detail"], (body, r.json())
        assert "Traceback" not in r.text
    r = client.post("/requests", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and "invalid request" in r.json()["detail"]
    r = client.post("/requests", json={"external_ref": "X", "model_sha256": "f" * 64, "indices": [pool[0]]})
    assert r.status_code == 404 and "register its checkpoint first" in r.json()["detail"]
    assert client.get("/requests/nope").status_code == 404
    assert client.get("/requests", params={"status": "received"}).json() == []


def test_happy_path_file_track_process_download(client, server, checkpoint, pool, tmp_path):
    _, db, version = server
    body = {"external_ref": "API-1", "model_sha256": version["weights_sha256"], "indices": [pool[11], pool[12]],
            "reason": "erasure request by e-mail"}
    first = client.post("/requests", json=body)
    assert first.status_code == 201, first.text
    filed = first.json()
    assert filed["created"] is True and filed["status"] == "received" and len(filed["sample_hashes"]) == 2
    again = client.post("/requests", json=body | {"indices": [pool[12], pool[11]]})
    assert again.status_code == 200 and again.json()["id"] == filed["id"] and again.json()["created"] is False
    conflict = client.post("/requests", json=body | {"indices": [pool[13]]})
    assert conflict.status_code == 409 and "already filed" in conflict.json()["detail"]
    by_version = client.post("/requests", json={"external_ref": "API-2", "model_version": version["id"], "indices": [pool[14]]})
    assert by_version.status_code == 201

    assert client.get(f"/requests/{filed['id']}/audit").status_code == 404  # not processed yet
    assert client.get("/requests/API-1/certificate").status_code == 409

    run = workflow.process(checkpoint, method="ga", options={"steps": 1, "lr": 0.001}, out_dir=tmp_path, db=db)
    assert run["status"] == "closed", run
    status = client.get("/requests/API-1").json()
    assert status["status"] == "closed" and status["run_id"] == run["id"]
    assert [h["status"] for h in status["history"]] == ["received", "scheduled", "unlearned", "audited", "closed"]
    html = client.get(f"/requests/{filed['id']}/audit")
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html") and "<html" in html.text
    report = client.get("/requests/API-2/audit", params={"format": "json"})
    assert report.status_code == 200 and report.json()["format"] == "oblivio-audit/1"
    cert = client.get("/requests/API-1/certificate").json()
    assert cert["model_before"]["weights_sha256"] == version["weights_sha256"]
    assert cert["samples"]["hashes"] == filed["sample_hashes"]
    listed = client.get("/requests").json()
    assert [r["external_ref"] for r in listed] == ["API-1", "API-2"]


@pytest.mark.parametrize(
    "args, env, message",
    [
        ([], {}, "no API token"),
        (["--host", "0.0.0.0", "--insecure-local"], {}, "--insecure-local only works with --host 127.0.0.1"),
        ([], {"OBLIVIO_API_TOKEN": "short"}, "shorter than 16 characters"),
        (["--token-file", "/nonexistent/token"], {}, "cannot read --token-file"),
    ],
)
def test_serve_refuses_to_start_without_a_proper_token(args, env, message, monkeypatch):
    monkeypatch.delenv("OBLIVIO_API_TOKEN", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    res = cli("serve", *args)
    assert isinstance(res.exception, OblivioError) and message in str(res.exception), (res.output, res.exception)
