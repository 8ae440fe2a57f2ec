"""Ledger throughput on this machine (loopback only): requests/s and latency of filing through the HTTP API.

    python benchmarks/ledger_throughput.py [--clients 8,32,128] [--requests 2000] [--server-workers 2]
    OBLIVIO_BENCH_PG_URL=postgresql+psycopg://user:pw@127.0.0.1/db python benchmarks/ledger_throughput.py   # adds PostgreSQL

Trains a small MLP on digits into a temporary folder, registers it, then for each database (a fresh
SQLite file; a fresh schema in $OBLIVIO_BENCH_PG_URL's database when set) starts a real
`oblivio serve` (uvicorn subprocesses on 127.0.0.1; the URL and token go through the environment)
and files ``--requests`` distinct requests from 8, 32 and 128 concurrent keep-alive clients
(asyncio + httpx in this process, on the same cores as the server). Every reply must be a 201 (or,
for a request sent again after the connection dropped, a 200: the same reference is idempotent), and
every request must be in the database exactly once. Prints JSON and a Markdown table; with ``--out DIR`` also
writes them to DIR/results.json (``"kind": "ledger_throughput"``, with machine, commit, date, command and issue 26's
target) and DIR/results.md, which ``python benchmarks/publish.py`` renders into RESULTS.md with the target met or
missed (commit the folder as benchmarks/results/ledger-throughput/).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import httpx

OBLIVIO = [sys.executable, "-c", "from oblivio.cli import main; main()"]
TARGET = {"db": "postgresql", "clients": 32, "min_per_s": 500, "max_p99_ms": 200}  # issue 26


def git_commit() -> str | None:
    """The short commit of this checkout, '+dirty' with uncommitted changes (as the bench's header)."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return sha + ("+dirty" if dirty else "")


def command_line() -> str:
    """This run's command, with the PostgreSQL URL (which may hold a password) elided."""
    env = "OBLIVIO_BENCH_PG_URL=postgresql+psycopg://... " if os.environ.get("OBLIVIO_BENCH_PG_URL") else ""
    return env + " ".join(["python", "benchmarks/ledger_throughput.py", *sys.argv[1:]])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(*args: str, env: dict | None = None) -> str:
    proc = subprocess.run([*OBLIVIO, *args], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"oblivio {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def serve_help() -> str:
    return subprocess.run([*OBLIVIO, "serve", "--help"], capture_output=True, text=True).stdout


def start_server(db: str, token: str, workers: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    args = [*OBLIVIO, "serve", "--port", str(port), "--log-level", "warning"]
    if workers > 1:
        args += ["--workers", str(workers)]
    env = os.environ | {"OBLIVIO_DB_URL": db, "OBLIVIO_API_TOKEN": token}
    server = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return server, base
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or server.poll() is not None:
            raise SystemExit(f"oblivio serve did not start: {server.stderr.read() if server.poll() is not None else ''}")
        time.sleep(0.2)


async def load(base: str, token: str, body, n: int, clients: int) -> dict:
    """``n`` POSTs from ``clients`` concurrent keep-alive connections; latencies in ms."""
    latencies: list[float] = []
    codes: dict = {}
    queue = iter(range(n))
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=120, limits=limits) as c:
        async def client() -> None:
            for i in queue:
                t = time.perf_counter()
                for attempt in range(4):  # a dropped connection: file again (same reference, so idempotent)
                    try:
                        r = await c.post("/requests", json=body(i))
                        break
                    except httpx.TransportError:
                        codes["transport error, retried"] = codes.get("transport error, retried", 0) + 1
                        if attempt == 3:
                            raise
                latencies.append(1000 * (time.perf_counter() - t))
                codes[r.status_code] = codes.get(r.status_code, 0) + 1

        t0 = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        elapsed = time.perf_counter() - t0
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return {"clients": clients, "requests": n, "seconds": round(elapsed, 2), "per_s": round(n / elapsed, 1),
            "p50_ms": round(q[49], 1), "p99_ms": round(q[98], 1), "max_ms": round(max(latencies), 1), "codes": codes}


def pg_schema_url(base: str) -> tuple[str, str]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    engine = create_engine(base, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    engine.dispose()
    return make_url(base).update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False), schema


def count_requests(db: str) -> tuple[int, int]:
    from sqlalchemy import create_engine, text

    engine = create_engine(db)
    with engine.connect() as conn:
        total = conn.execute(text("SELECT count(*) FROM request")).scalar()
        distinct = conn.execute(text("SELECT count(DISTINCT external_ref) FROM request")).scalar()
    engine.dispose()
    return total, distinct


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", default="8,32,128", help="comma-separated numbers of concurrent clients")
    ap.add_argument("--requests", type=int, default=2000, help="requests filed per client count")
    ap.add_argument("--server-workers", type=int, default=2, help="oblivio serve --workers (1 where unsupported)")
    ap.add_argument("--label", default="", help="a name for this code version in the table (e.g. a commit)")
    ap.add_argument("--out", type=Path, help="write results.json and results.md here (e.g. benchmarks/results/ledger-throughput)")
    args = ap.parse_args()

    from oblivio.checkpoint import read_sidecar
    from oblivio.pipeline import split_for_request
    from oblivio.bench.report import cpu_name
    from oblivio.scenarios import RandomSubset

    tmp = Path(tempfile.mkdtemp(prefix="ledger-bench-"))
    ckpt = tmp / "model.safetensors"
    run("train", "--epochs", "20", "--no-progress", "--out", str(ckpt))
    _, split = split_for_request(read_sidecar(ckpt), RandomSubset(count=1))
    pool = split.pool_idx.tolist()
    workers = args.server_workers if "--workers" in serve_help() else 1
    token = secrets.token_hex(32)
    dbs = [("sqlite", f"sqlite:///{tmp / 'ledger.db'}", None)]
    if os.environ.get("OBLIVIO_BENCH_PG_URL"):
        dbs.append(("postgresql", *pg_schema_url(os.environ["OBLIVIO_BENCH_PG_URL"])))
    results = {"kind": "ledger_throughput",
               "machine": f"{platform.node()}, {cpu_name()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f} at start",
               "python": platform.python_version(), "server_workers": workers, "label": args.label,
               "server_note": "on SQLite serve runs one process" if workers > 1 else "",
               "commit": git_commit(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "command": command_line(), "requests": args.requests, "target": TARGET, "rows": []}
    for name, db, _schema in dbs:
        env = os.environ | {"OBLIVIO_DB_URL": db}
        sha = json.loads(subprocess.run([sys.executable, "-c", (
            "import json,sys; from oblivio.ledger import register_model; "
            f"print(json.dumps(register_model({str(ckpt)!r})))")], capture_output=True, text=True, env=env, check=True).stdout)["weights_sha256"]
        server, base = start_server(db, token, workers)
        try:
            asyncio.run(load(base, token, lambda i: {"external_ref": f"warm-{i}", "model_sha256": sha, "indices": [pool[i % len(pool)]]},
                             50, 4))
            for clients in (int(c) for c in args.clients.split(",")):
                tag = f"c{clients}"

                def body(i: int, tag=tag) -> dict:
                    return {"external_ref": f"{tag}-{i}", "model_sha256": sha, "indices": [pool[i % len(pool)]]}

                row = asyncio.run(load(base, token, body, args.requests, clients)) | {"db": name}
                results["rows"].append(row)
                print(json.dumps(row), flush=True)
                # 201 each, or 200 for a request filed again after a dropped connection had recorded it
                assert set(row["codes"]) <= {201, 200, "transport error, retried"}, row["codes"]
                assert row["codes"].get(200, 0) <= row["codes"].get("transport error, retried", 0), row["codes"]
        finally:
            server.terminate()
            server.wait(timeout=60)
        total, distinct = count_requests(db)
        expected = 50 + args.requests * len(args.clients.split(","))
        assert total == distinct == expected, (total, distinct, expected)  # every 201 in the database exactly once
    print(json.dumps(results, indent=2))
    if args.out:
        from publish import ledger_markdown  # benchmarks/publish.py, beside this script: one renderer for both

        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
        (args.out / "results.md").write_text(ledger_markdown(results))
    print(f"\n{results['machine']}; python {results['python']}; oblivio serve --workers {workers}; {args.label}\n")
    print("| database | clients | requests/s | p50 ms | p99 ms | max ms | dropped connections |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in results["rows"]:
        print(f"| {r['db']} | {r['clients']} | {r['per_s']:.0f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {r['max_ms']:.0f} "
              f"| {r['codes'].get('transport error, retried', 0)} |")


if __name__ == "__main__":
    main()
