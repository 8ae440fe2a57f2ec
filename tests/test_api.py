"""The ledger's HTTP API over a real uvicorn on 127.0.0.1 (random free port), queried with httpx: the happy path,
the hostile client (D1-D11 of issue 26), the worker closing requests filed through the API, a Hypothesis fuzz
of every route against the ASGI app, and Schemathesis against a live server."""
from __future__ import annotations

import json
import os
import socket
import stat
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

import uvicorn  # noqa: E402

from oblivio import OblivioError  # noqa: E402
from oblivio.api import create_app  # noqa: E402
from oblivio.ledger import workflow  # noqa: E402
from test_ledger import BACKENDS, checkpoint, cli, database, pool  # noqa: E402,F401 - shared fixtures

TOKEN = "Jx3kq9T2vLw8RzN5bY7mH4cP1sD6fG0aK2eU9iO3pQ"  # >= 128 bits by the server's estimate


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
        assert "/requests" in openapi["paths"] and "/requests/{request_id}/audit" in openapi["paths"]
        assert "/requests/by-ref/{ref}/certificate" in openapi["paths"]
        missing = anon.get("/requests/1")
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert anon.post("/requests", json={}).status_code == 401
        assert anon.get("/requests/1", headers={"Authorization": "Bearer wrong-token"}).status_code == 403
        assert anon.get("/requests/1", headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401
        # D1: authentication before parsing: malformed JSON without a token is 401, not 422
        r = anon.post("/requests", content=b"{not json", headers={"Content-Type": "application/json"})
        assert r.status_code == 401, r.text


def test_bad_bodies_get_422_with_a_clear_message(client, server, pool):
    sha = server[2]["weights_sha256"]
    third = min(set(range(len(pool) + 200)) - set(pool))
    cases = [
        ({"model_sha256": sha, "indices": [pool[0]]}, "external_ref: Field required"),
        ({"external_ref": "X", "indices": [pool[0]]}, "give exactly one of model_sha256 and model_version"),
        ({"external_ref": "X", "model_sha256": "abc", "indices": [pool[0]]}, "model_sha256: String should match pattern"),
        ({"external_ref": "X", "model_sha256": sha, "indices": ["one"]}, "indices.0: must be a JSON integer"),
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
    assert r.status_code == 422 and "invalid request" in r.json()["detail"] and r.json()["errors"]
    r = client.post("/requests", json={"external_ref": "X", "model_sha256": "f" * 64, "indices": [pool[0]]})
    assert r.status_code == 404 and "register its checkpoint first" in r.json()["detail"]
    assert client.get("/requests/by-ref/nope").status_code == 404
    assert client.get("/requests/nope").status_code == 422  # ids are integers; references live under /by-ref/
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
    assert client.get("/requests/by-ref/API-1/certificate").status_code == 409

    # the service's worker, not an operator's shell, closes the requests (issue 26, item 7)
    run = workflow.work_once(db, method="ga", options={"steps": 1, "lr": 0.001}, out_dir=tmp_path)
    assert run["status"] == "closed" and run["requests"] == ["API-1", "API-2"], run
    assert workflow.work_once(db, method="ga", options={"steps": 1, "lr": 0.001}, out_dir=tmp_path) is None  # nothing left
    status = client.get("/requests/by-ref/API-1").json()
    assert status["status"] == "closed" and status["run_id"] == run["id"]
    assert [h["status"] for h in status["history"]] == ["received", "scheduled", "unlearned", "audited", "closed"]
    html = client.get(f"/requests/{filed['id']}/audit")
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html") and "<html" in html.text
    report = client.get("/requests/by-ref/API-2/audit", params={"format": "json"})
    assert report.status_code == 200 and report.json()["format"] == "oblivio-audit/1"
    cert = client.get("/requests/by-ref/API-1/certificate").json()
    assert cert == client.get(f"/requests/{filed['id']}/certificate").json() | {"issued_at": cert["issued_at"]}
    assert cert["model_before"]["weights_sha256"] == version["weights_sha256"]
    assert cert["samples"]["hashes"] == filed["sample_hashes"]
    assert "/" not in cert["model_after"]["checkpoint"] and str(tmp_path) not in json.dumps(cert)  # D9
    listed = client.get("/requests").json()
    assert [r["external_ref"] for r in listed] == ["API-1", "API-2"]


@pytest.mark.parametrize(
    "args, env, message",
    [
        ([], {}, "no API token"),
        (["--host", "0.0.0.0", "--insecure-local"], {}, "--insecure-local only works with --host 127.0.0.1"),
        ([], {"OBLIVIO_API_TOKEN": "short"}, "too weak"),
        ([], {"OBLIVIO_API_TOKEN": "a" * 16}, "too weak"),
        ([], {"OBLIVIO_API_TOKEN": "a" * 64}, "too weak"),
        ([], {"OBLIVIO_API_TOKEN": "abcd" * 12}, "too weak"),
        (["--token-file", "/nonexistent/token"], {}, "cannot read --token-file"),
    ],
)
def test_serve_refuses_to_start_without_a_proper_token(args, env, message, monkeypatch):
    monkeypatch.delenv("OBLIVIO_API_TOKEN", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    res = cli("serve", *args)
    assert isinstance(res.exception, OblivioError) and message in str(res.exception), (res.output, res.exception)


# ---------------------------------------------------------------- the hostile client (issue 26)


def test_body_size_is_capped_while_reading_and_the_server_stays_responsive(server, client):
    """D1: a body over the cap is refused while read (413), with or without Content-Length, and /health stays fast."""
    big = b'{"external_ref": "' + b"x" * (3 << 20) + b'"}'
    r = client.post("/requests", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413, r.text

    def chunks():
        for _ in range(64):
            yield b"x" * 65536

    r = client.post("/requests", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413, r.text
    with httpx.Client(base_url=server[0], timeout=30) as anon:  # unauthenticated: refused before the body is read
        t = time.perf_counter()
        assert anon.post("/requests", content=big, headers={"Content-Type": "application/json"}).status_code in (401, 413)
        assert anon.post("/requests", content=chunks(), headers={"Content-Type": "application/json"}).status_code == 401
        assert time.perf_counter() - t < 5
        t = time.perf_counter()
        assert anon.get("/health").status_code == 200 and time.perf_counter() - t < 1


def test_validation_is_bounded_and_linear(client, server, pool):
    """D2: 100,000 duplicated indices (a ~300 KB body) are refused at once, not after seconds of CPU."""
    sha = server[2]["weights_sha256"]
    before = workflow.list_requests(db=server[1])
    for indices, message in (([5] * 100_000, "at most 10000"), ([pool[0]] * 10_000, "distinct"), ([5, 5], "distinct")):
        t = time.perf_counter()
        r = client.post("/requests", json={"external_ref": "D2", "model_sha256": sha, "indices": indices})
        assert r.status_code == 422 and message in r.text, r.text[:300]
        assert time.perf_counter() - t < 2
    assert workflow.list_requests(db=server[1]) == before


@pytest.mark.parametrize("path", ["/requests/99999999999999999999", "/requests/99999999999999999999/audit",
                                  "/requests/99999999999999999999/certificate", "/requests/2147483648",
                                  "/requests/0", "/requests/-1", "/requests/%C2%B2", "/requests/%D9%A3", "/requests/1_0",
                                  "/requests/+1", "/requests/1.0", "/requests/%201", "/requests/by-ref/%00",
                                  "/requests/by-ref/a%00b/audit", "/requests/by-ref/%2E%2E",
                                  "/requests?status=bogus", "/requests?status=%00", "/requests?limit=99999999999999999999",
                                  "/requests?limit=0", "/requests?limit=%D9%A3"])
def test_bad_ids_and_queries_are_422_never_500(client, path):
    """D3/D4/D5: overflowing, non-ASCII-digit and NUL-bearing ids, references and queries are 422 on both databases."""
    r = client.get(path)
    assert r.status_code == 422, (path, r.status_code, r.text)
    assert set(r.json()) == {"detail", "errors"}


def test_bad_bodies_are_422_never_500_nor_coerced(client, server, pool):
    """D3 (overflow), D5 (NUL), D10 (coercion), refs outside the documented character set: 422, nothing written."""
    sha = server[2]["weights_sha256"]
    before = workflow.list_requests(db=server[1])
    ok = {"external_ref": "B-ok", "model_sha256": sha, "indices": [pool[30]]}
    bodies = [
        ok | {"indices": [2**63]}, ok | {"indices": [2**31]}, ok | {"indices": [-1]},
        {"external_ref": "B-1", "model_version": 2**63, "indices": [pool[30]]},
        {"external_ref": "B-1", "model_version": 2**31, "indices": [pool[30]]},
        ok | {"external_ref": "a\x00b"}, ok | {"reason": "nul \x00 here"}, ok | {"reason": "escape \x1b[31m"},
        ok | {"indices": ["5"]}, ok | {"indices": [True]}, ok | {"indices": [5.5]}, ok | {"indices": [None]},
        ok | {"indices": [float(pool[30])]}, ok | {"indices": [1e3]}, {"external_ref": "B-1", "model_sha256": sha, "scenario": "class", "classes": [1.0]},
        {"external_ref": "B-1", "model_version": 1.0, "indices": [pool[30]]},
        {"external_ref": "B-1", "model_version": "1", "indices": [pool[30]]},
        {"external_ref": "B-1", "model_version": True, "indices": [pool[30]]},
        ok | {"external_ref": "team/42"}, ok | {"external_ref": "x[/]"}, ok | {"external_ref": " spaced"},
        ok | {"external_ref": "é"}, ok | {"external_ref": "x" * 201}, ok | {"model_version": 1},
        ok | {"classes": [1]}, {"external_ref": "B-1", "model_sha256": sha, "scenario": "class"},
        {"external_ref": "B-1", "model_sha256": sha, "scenario": "backdoor", "indices": [1]},
        [ok], "text", 5, None,
    ]
    for body in bodies:
        r = client.post("/requests", json=body)
        assert r.status_code == 422, (body if len(str(body)) < 300 else str(body)[:300], r.status_code, r.text)
        assert set(r.json()) == {"detail", "errors"} and r.json()["errors"], r.text
    assert workflow.list_requests(db=server[1]) == before
    # the same body with the integer written as an integer is filed
    r = client.post("/requests", json=ok | {"indices": [pool[30]]})
    assert r.status_code == 201 and r.json()["sample_ids"] == [pool[30]], r.text


def test_ids_and_refs_never_alias(client, server, pool):
    """D6: a reference of digits is a reference: /requests/1 is request id 1, /requests/by-ref/1 the reference '1'."""
    sha = server[2]["weights_sha256"]
    first = client.post("/requests", json={"external_ref": "owner-A", "model_sha256": sha, "indices": [pool[40]]}).json()
    digits = client.post("/requests", json={"external_ref": str(first["id"]), "model_sha256": sha, "indices": [pool[41]]}).json()
    assert digits["id"] != first["id"]
    assert client.get(f"/requests/{first['id']}").json()["external_ref"] == "owner-A"
    assert client.get(f"/requests/by-ref/{first['id']}").json()["id"] == digits["id"]
    # the certificate and audit of the digit reference are its own (none yet), never request 1's
    assert client.get(f"/requests/by-ref/{first['id']}/audit").json()["detail"].startswith(f"request {digits['id']} ")
    with pytest.raises(workflow.NotFound):
        workflow.get_request(str(digits["id"] + 1000), db=server[1])


def test_a_500_keeps_the_connection_and_says_nothing(server, monkeypatch):
    """D8: an unforeseen error is a JSON 500 on a connection that stays open for the next request."""
    def broken(*a, **k):
        raise RuntimeError("/srv/secret/path exploded")

    monkeypatch.setattr(workflow, "list_requests", broken)
    host, port = server[0].removeprefix("http://").split(":")
    request = f"GET /requests HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        replies = []
        for _ in range(2):
            sock.sendall(request)
            data = b""
            while b"\r\n\r\n" not in data:
                data += sock.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
            while len(body) < length:
                body += sock.recv(65536)
            replies.append((head.split(b" ")[1], body))
    assert replies == [(b"500", b'{"detail": "internal server error"}')] * 2


def test_errors_name_no_server_path(client, server, pool, checkpoint, tmp_path):
    """D9: a model whose checkpoint vanished is a 422 that does not reveal where the server keeps its files."""
    import shutil

    copy = tmp_path / "hidden-folder" / "gone.safetensors"
    copy.parent.mkdir()
    shutil.copy(checkpoint, copy)
    shutil.copy(checkpoint.with_suffix(".json"), copy.with_suffix(".json"))
    from oblivio.checkpoint import load_checkpoint, save_checkpoint

    model, meta = load_checkpoint(copy)
    import torch

    with torch.no_grad():
        next(model.parameters()).add_(1.0)  # other weights, same training record
    save_checkpoint(copy, model, arch=meta["arch"], input_shape=tuple(meta["input_shape"]), num_classes=meta["num_classes"],
                    dataset=meta.get("dataset"), seed=0, training=meta["training"])
    version = workflow.register_model(copy, db=server[1])
    copy.unlink()
    r = client.post("/requests", json={"external_ref": "D9", "model_version": version["id"], "indices": [pool[50]]})
    assert r.status_code == 422 and "missing or changed" in r.text, r.text
    assert "hidden-folder" not in r.text and str(tmp_path) not in r.text


def test_openapi_documents_every_status_and_the_error_bodies(server):
    with httpx.Client(base_url=server[0], timeout=30) as anon:
        doc = anon.get("/openapi.json").json()
    post = doc["paths"]["/requests"]["post"]["responses"]
    assert {"200", "201", "401", "403", "404", "409", "413", "422"} <= set(post)
    assert post["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/ValidationErrorOut")
    for path in ("/requests/{request_id}", "/requests/by-ref/{ref}", "/requests/{request_id}/certificate"):
        assert {"401", "403", "404", "422"} <= set(doc["paths"][path]["get"]["responses"]), path
    assert "409" in doc["paths"]["/requests/{request_id}/certificate"]["get"]["responses"]
    body = doc["components"]["schemas"]["RequestIn"]
    assert {"required": ["model_sha256"]} in body["allOf"][0]["oneOf"]  # exactly one model, stated in the schema
    assert body["properties"]["external_ref"]["pattern"] == workflow.REF_PATTERN
    assert "HTTPValidationError" not in json.dumps(doc)


def test_serve_token_file_must_be_private_and_new_token_makes_one(tmp_path, monkeypatch):
    """D11: a group/world-readable token file is an error; --new-token writes a 0600 file the server accepts."""
    from oblivio.cli.serve import check_token, read_token

    monkeypatch.delenv("OBLIVIO_API_TOKEN", raising=False)
    path = tmp_path / "token"
    res = cli("serve", "--new-token", str(path))
    assert res.exit_code == 0, res.output
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    token = read_token(path)
    check_token(token, "127.0.0.1", False)  # strong enough
    res = cli("serve", "--new-token", str(path))
    assert isinstance(res.exception, OblivioError) and "exists" in str(res.exception)
    os.chmod(path, 0o644)
    res = cli("serve", "--token-file", str(path))
    assert isinstance(res.exception, OblivioError) and "readable by other users" in str(res.exception)
    os.chmod(path, 0o600)
    from test_ledger import app, runner

    res = runner.invoke(app, ["serve", "--token-file", str(path), "--db", "postgresql+psycopg://u:secret@127.0.0.1:1/db"])
    assert isinstance(res.exception, OblivioError) and "process list" in str(res.exception)
