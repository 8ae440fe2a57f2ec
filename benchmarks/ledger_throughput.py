"""Ledger throughput on this machine (loopback only): requests/second for `add` through the HTTP API
and through the CLI, and the latency of `process` for a 10-request batch on digits.

    python benchmarks/ledger_throughput.py --api-requests 200 --cli-requests 10 [--db postgresql+psycopg://...]

Trains a small MLP on digits into a temporary folder, serves the API with `oblivio serve` (a real
uvicorn subprocess on 127.0.0.1) and prints a JSON summary plus a Markdown table row.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

OBLIVIO = [sys.executable, "-c", "from oblivio.cli import main; main()"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(*args: str, env: dict | None = None) -> str:
    proc = subprocess.run([*OBLIVIO, *args], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"oblivio {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--api-requests", type=int, default=200)
    ap.add_argument("--api-clients", type=int, default=4, help="concurrent HTTP clients")
    ap.add_argument("--cli-requests", type=int, default=10)
    ap.add_argument("--batch", type=int, default=10, help="requests in the processed batch")
    ap.add_argument("--method", default="dm")
    ap.add_argument("--db", default=None, help="ledger URL (default: a fresh SQLite file); must be empty")
    args = ap.parse_args()

    from oblivio.ledger import workflow
    from oblivio.pipeline import split_for_request
    from oblivio.checkpoint import read_sidecar
    from oblivio.scenarios import RandomSubset

    tmp = Path(tempfile.mkdtemp(prefix="ledger-bench-"))
    db = args.db or f"sqlite:///{tmp / 'ledger.db'}"
    ckpt = tmp / "model.safetensors"
    run("train", "--epochs", "20", "--no-progress", "--out", str(ckpt))
    _, split = split_for_request(read_sidecar(ckpt), RandomSubset(count=1))
    pool = split.pool_idx.tolist()
    version = workflow.register_model(ckpt, db=db)
    results: dict = {"machine": f"{platform.node()} {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}",
                     "python": platform.python_version(), "db": db.split(":")[0]}

    # API: a real `oblivio serve` subprocess
    token = secrets.token_hex(16)
    port = free_port()
    server = subprocess.Popen([*OBLIVIO, "serve", "--port", str(port), "--db", db, "--log-level", "warning"],
                              env=os.environ | {"OBLIVIO_API_TOKEN": token})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("oblivio serve did not start")
            time.sleep(0.2)
        headers = {"Authorization": f"Bearer {token}"}
        n = args.api_requests

        local = threading.local()

        def file(i: int) -> int:  # one keep-alive connection per client thread
            if not hasattr(local, "client"):
                local.client = httpx.Client(base_url=base, headers=headers, timeout=60)
            c = local.client
            return c.post("/requests", json={"external_ref": f"api-{i}", "model_sha256": version["weights_sha256"],
                                         "indices": [pool[i % len(pool)]]}).status_code

        with httpx.Client(base_url=base, headers=headers, timeout=60) as c:  # sequential, one connection
            t = time.perf_counter()
            codes = [c.post("/requests", json={"external_ref": f"seq-{i}", "model_sha256": version["weights_sha256"],
                                               "indices": [pool[i % len(pool)]]}).status_code for i in range(n)]
            results["api_add_per_s_sequential"] = n / (time.perf_counter() - t)
        assert set(codes) == {201}, codes
        t = time.perf_counter()
        with ThreadPoolExecutor(args.api_clients) as ex:
            codes = list(ex.map(file, range(n)))
        results[f"api_add_per_s_{args.api_clients}_clients"] = n / (time.perf_counter() - t)
        assert set(codes) == {201}, codes
    finally:
        server.terminate()
        server.wait(timeout=30)

    # CLI: one `oblivio requests add` process per request (interpreter + imports each time)
    t = time.perf_counter()
    for i in range(args.cli_requests):
        run("requests", "add", "--ref", f"cli-{i}", "--checkpoint", str(ckpt), "--indices", str(pool[i]), "--db", db)
    results["cli_add_per_s"] = args.cli_requests / (time.perf_counter() - t)

    # process: a fresh model version with exactly `batch` pending requests
    ckpt2 = tmp / "model2.safetensors"
    run("train", "--epochs", "20", "--no-progress", "--seed", "1", "--out", str(ckpt2))
    _, split2 = split_for_request(read_sidecar(ckpt2), RandomSubset(count=1))
    for i in range(args.batch):
        workflow.add_request(f"batch-{i}", checkpoint=ckpt2, indices=[split2.pool_idx[10 * i]], db=db)
    t = time.perf_counter()
    done = workflow.process(ckpt2, method=args.method, out_dir=tmp / "out", db=db)
    results["process_seconds"] = time.perf_counter() - t
    results["process_method_seconds"] = done["seconds"]
    results["process_status"] = f"{done['status']} ({done['verdict']})"
    results["batch"] = args.batch
    results["method"] = args.method
    print(json.dumps(results, indent=2))
    print(f"| {results['db']} | {results['api_add_per_s_sequential']:.0f} | {results[f'api_add_per_s_{args.api_clients}_clients']:.0f} "
          f"| {results['cli_add_per_s']:.2f} | {results['process_seconds']:.2f} ({args.method} {results['process_method_seconds']:.2f}) |")


if __name__ == "__main__":
    main()
