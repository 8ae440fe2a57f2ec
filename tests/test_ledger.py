"""The request ledger on SQLite and PostgreSQL: workflow end to end, idempotency, concurrency, crash and resume.

PostgreSQL variants run when ``OBLIVIO_TEST_PG_URL`` points at a database the test role may create
schemas in (``.ci/run`` sets it); each test gets a fresh schema.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest

pytest.importorskip("sqlalchemy")
pytest.importorskip("alembic")

from sqlalchemy import create_engine, func, select, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from oblivio import OblivioError  # noqa: E402
from oblivio.cli import app  # noqa: E402
from oblivio.ledger import db as ledger_db  # noqa: E402
from oblivio.ledger import workflow  # noqa: E402
from oblivio.ledger.models import ModelVersion, Request, StatusChange, UnlearningRun  # noqa: E402

runner = CliRunner()
PG_ENV = "OBLIVIO_TEST_PG_URL"
BACKENDS = ["sqlite", "postgresql"]
SRC = str(Path(__file__).resolve().parents[1] / "src")
FAST = ["--method", "ga", "--set", "steps=1", "--set", "lr=0.001"]  # a tiny gradient-ascent step: fast, and the proxy audit passes


@contextmanager
def database(kind: str, folder: Path):
    """A fresh, empty ledger database URL of ``kind``; dropped afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{folder / 'ledger.db'}"
        ledger_db.dispose_all()
        return
    base = os.environ.get(PG_ENV)
    if not base:
        pytest.skip(f"{PG_ENV} is not set (e.g. postgresql+psycopg://oblivio:oblivio@127.0.0.1:5432/oblivio_test); "
                    ".ci/run starts PostgreSQL and sets it")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        yield make_url(base).update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
    finally:
        ledger_db.dispose_all()
        with admin.connect() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture(params=BACKENDS)
def db_url(request, tmp_path):
    with database(request.param, tmp_path) as url:
        yield url


_TRAINED: dict[str, Path] = {}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """An MLP trained for a few epochs on digits (never modified by any test; trained once per session)."""
    if "model" not in _TRAINED:
        path = tmp_path_factory.mktemp("ledger-model") / "model.safetensors"
        res = runner.invoke(app, ["train", "--epochs", "5", "--no-progress", "--out", str(path)])
        assert res.exit_code == 0, res.output
        _TRAINED["model"] = path
    return _TRAINED["model"]


@pytest.fixture(scope="module")
def pool(checkpoint) -> list[int]:
    """Every training-set index the model trained on (the train pool): those it classifies correctly first.

    Tests forget correctly classified samples, so the proxy audit (forget accuracy close to test
    accuracy) is not thrown off by samples the original model never got right.
    """
    import torch

    from oblivio import load_checkpoint
    from oblivio.pipeline import split_for_request
    from oblivio.scenarios import RandomSubset

    model, meta = load_checkpoint(checkpoint)
    _, split = split_for_request(meta, RandomSubset(count=1))
    idx = torch.as_tensor(split.pool_idx)
    with torch.no_grad():
        right = (model(split.x_train[idx]).argmax(1) == split.y_train[idx]).numpy()
    return split.pool_idx[right].tolist() + split.pool_idx[~right].tolist()


def db_args(args) -> tuple[list[str], dict]:
    """A ``--db`` URL with a password goes to the environment, as the CLI demands (never on a command line)."""
    args, env = list(args), {}
    if "--db" in args:
        i = args.index("--db")
        if "://" in args[i + 1] and make_url(args[i + 1]).password:
            env[ledger_db.DB_ENV] = args[i + 1]
            del args[i:i + 2]
    return args, env


def cli(*args: str, env: dict | None = None):
    args, db_env = db_args(args)
    res = runner.invoke(app, args, env=db_env | (env or {}))
    return res


def ok(*args: str) -> str:
    res = cli(*args)
    assert res.exit_code == 0, (res.output, res.exception)
    return res.output


def oblivio_subprocess(*args: str, env: dict | None = None, **kw) -> subprocess.Popen:
    args, db_env = db_args(args)
    full_env = os.environ | db_env | {"PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"} | (env or {})
    return subprocess.Popen([sys.executable, "-c", "from oblivio.cli import main; main()", *args], env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def snapshot(path: Path) -> tuple[bytes, bytes]:
    return path.read_bytes(), path.with_suffix(".json").read_bytes()


def count(db: str, model) -> int:
    with ledger_db.session_scope(db, write=False) as s:
        return s.scalar(select(func.count()).select_from(model))


def test_workflow_end_to_end_add_process_audit_export(db_url, checkpoint, pool, tmp_path):
    a, b, c, d = pool[5], pool[17], pool[40], pool[1]
    before = snapshot(checkpoint)
    out_dir = tmp_path / "out"
    assert "filed" in ok("requests", "add", "--ref", "T-1", "--checkpoint", str(checkpoint), "--indices", f"{a},{b},{c}",
                         "--reason", "GDPR art. 17", "--db", db_url)
    ok("requests", "add", "--ref", "T-2", "--checkpoint", str(checkpoint), "--indices", f"{c},{d}", "--db", db_url)
    shown = json.loads(ok("requests", "show", "T-1", "--db", db_url))
    assert shown["status"] == "received" and shown["sample_ids"] == [a, b, c] and len(shown["sample_hashes"]) == 3

    output = ok("requests", "process", "--checkpoint", str(checkpoint), *FAST, "--out-dir", str(out_dir), "--db", db_url)
    assert "closed" in output and "verdict" in output
    assert snapshot(checkpoint) == before, "the input checkpoint must never change"
    listing = json.loads(ok("requests", "list", "--json", "--db", db_url))
    assert [(r["external_ref"], r["status"], r["run_id"]) for r in listing] == [("T-1", "closed", 1), ("T-2", "closed", 1)]
    t1 = workflow.get_request("T-1", db=db_url)
    assert [h["status"] for h in t1["history"]] == ["received", "scheduled", "unlearned", "audited", "closed"]
    assert [h["at"] for h in t1["history"]] == sorted(h["at"] for h in t1["history"])

    cert_path = tmp_path / "cert.json"
    ok("requests", "export", "T-1", "--out", str(cert_path), "--root", str(tmp_path), "--db", db_url)
    cert = json.loads(cert_path.read_text())
    assert cert["format"] == workflow.CERTIFICATE_FORMAT
    assert cert["request"]["external_ref"] == "T-1" and cert["request"]["reason"] == "GDPR art. 17"
    assert cert["unlearning"]["method"] == "ga" and cert["unlearning"]["batch"] == ["T-1", "T-2"]
    # what a third party checks: weight hashes of both files, sample hashes, split and audit files
    # paths relative to the declared root, never the server's absolute layout
    assert cert["model_after"]["checkpoint"] == "out/model.run-1.safetensors" and cert["audit"]["report"] == "out/model.run-1.audit"
    assert cert["model_before"]["checkpoint"] == checkpoint.name  # outside the root: its file name alone
    assert str(tmp_path) not in json.dumps(cert)
    after = tmp_path / cert["model_after"]["checkpoint"]
    assert hashlib.sha256(after.read_bytes()).hexdigest() == cert["model_after"]["weights_sha256"]
    assert hashlib.sha256(checkpoint.read_bytes()).hexdigest() == cert["model_before"]["weights_sha256"]
    assert cert["model_after"]["parent_id"] == cert["model_before"]["id"] and cert["model_after"]["weights_changed"]
    from oblivio import load_checkpoint
    from oblivio.pipeline import split_for_checkpoint

    _, meta = load_checkpoint(after)
    _, split = split_for_checkpoint(meta)  # 'oblivio audit' can rebuild the batch's split from the sidecar
    assert {a, b, c, d} <= set(split.forget_idx.tolist())
    assert meta["split"]["hashes"] == cert["split"]["hashes"]
    assert cert["samples"]["hashes"] == workflow.sample_hashes(split, [a, b, c])
    for name, digest in cert["audit"]["report_sha256"].items():
        assert hashlib.sha256((tmp_path / cert["audit"]["report"] / name).read_bytes()).hexdigest() == digest
    assert set(cert["audit"]["metrics"]) == {"original", "unlearned"} and "UA" in cert["audit"]["metrics"]["unlearned"]
    assert cert["audit"]["verdict"] in ("pass", "warn")

    assert "no pending requests" in ok("requests", "process", "--checkpoint", str(after), *FAST, "--db", db_url)
    res = cli("requests", "process", "--checkpoint", str(checkpoint), *FAST, "--db", db_url)
    assert isinstance(res.exception, OblivioError) and "already unlearned into version 2" in str(res.exception)


def test_filing_twice_is_idempotent_and_conflicts_are_refused(db_url, checkpoint, pool):
    first, created = workflow.add_request(" REF-7 ", checkpoint=checkpoint, indices=[pool[3], pool[9]], db=db_url)
    again, created_again = workflow.add_request("REF-7", checkpoint=checkpoint, indices=[pool[9], pool[3]], db=db_url)
    assert created and not created_again and again["id"] == first["id"] and again["external_ref"] == "REF-7"
    assert count(db_url, Request) == 1 and count(db_url, StatusChange) == 1
    with pytest.raises(workflow.Conflict, match="already filed as request 1"):
        workflow.add_request("REF-7", checkpoint=checkpoint, indices=[pool[3]], db=db_url)
    by_hash, created = workflow.add_request("REF-7", model_sha256=first["model"]["weights_sha256"], indices=[pool[3], pool[9]], db=db_url)
    assert not created and by_hash["id"] == first["id"]
    assert count(db_url, ModelVersion) == 1


def test_concurrent_adds_from_threads(db_url, checkpoint, pool):
    workflow.register_model(checkpoint, db=db_url)
    refs = [f"C-{i}" for i in range(6)] + ["C-same", "C-same", "C-same"]
    results, errors = [], []

    def add(ref: str, i: int) -> None:
        try:
            results.append(workflow.add_request(ref, checkpoint=checkpoint, indices=[pool[100 + (i if ref != "C-same" else 0)]], db=db_url))
        except Exception as e:  # noqa: BLE001 - collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=add, args=(ref, i)) for i, ref in enumerate(refs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sum(created for _, created in results) == 7
    assert len({r["id"] for r, _ in results if r["external_ref"] == "C-same"}) == 1
    assert count(db_url, Request) == 7 and count(db_url, StatusChange) == 7


def test_concurrent_adds_from_processes_on_a_fresh_database(db_url, checkpoint, pool):
    """Several CLI processes at once, on a database nobody migrated yet: every request lands exactly once."""
    procs = [oblivio_subprocess("requests", "add", "--ref", ref, "--checkpoint", str(checkpoint), "--indices", str(pool[i]),
                                "--db", db_url) for i, ref in enumerate(["P-0", "P-1", "P-dup", "P-dup"], start=10)]
    outs = [p.communicate(timeout=180) for p in procs]
    codes = [p.returncode for p in procs]
    # the two P-dup filings carry different samples: one wins, the other is refused as a conflict
    assert codes.count(0) == 3 and codes.count(2) == 1, outs
    assert any("already filed as request" in o + e for o, e in outs), outs
    assert not any("Traceback" in o + e for o, e in outs)
    assert count(db_url, Request) == 3 and count(db_url, ModelVersion) == 1


@pytest.mark.parametrize("crash_at", ["unlearned", "commit"])
def test_killed_process_leaves_a_consistent_ledger_and_a_rerun_finishes_it(db_url, checkpoint, pool, tmp_path, crash_at):
    if crash_at == "unlearned" and db_url.startswith("postgresql"):
        pytest.skip("the crash before the checkpoint is written is backend-independent; checked on SQLite")
    before = snapshot(checkpoint)
    for ref, idx in (("K-1", [pool[7], pool[8]]), ("K-2", [pool[300]])):
        workflow.add_request(ref, checkpoint=checkpoint, indices=idx, db=db_url)
    out_dir = tmp_path / "out"
    proc = oblivio_subprocess("requests", "process", "--checkpoint", str(checkpoint), *FAST, "--out-dir", str(out_dir),
                              "--db", db_url, env={workflow.CRASH_ENV: crash_at})
    proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL
    assert snapshot(checkpoint) == before
    output = out_dir / "model.run-1.safetensors"
    assert output.exists() == (crash_at == "commit")  # killed inside the final transaction: file written, nothing recorded
    with ledger_db.session_scope(db_url, write=False) as s:
        assert [(r.status, r.run_id) for r in s.scalars(select(Request).order_by(Request.id))] == [("scheduled", 1)] * 2
        assert [r.status for r in s.scalars(select(UnlearningRun))] == ["scheduled"]
        assert s.scalar(select(func.count()).select_from(ModelVersion)) == 1
        assert [h.status for h in s.scalars(select(StatusChange).where(StatusChange.request_id == 1).order_by(StatusChange.id))] == ["received", "scheduled"]

    messages: list[str] = []
    workflow.add_request("K-3", checkpoint=checkpoint, indices=[pool[9]], db=db_url)  # filed after the crash: waits for the next run
    run = workflow.process(checkpoint, method="ga", options={"steps": 1, "lr": 0.001}, out_dir=out_dir, db=db_url, log=messages.append)
    assert run["id"] == 1 and run["status"] == "closed" and run["requests"] == ["K-1", "K-2"]
    assert any("resuming run 1" in m for m in messages)
    assert any("reusing its complete checkpoint" in m for m in messages) == (crash_at == "commit")
    assert snapshot(checkpoint) == before
    statuses = {r["external_ref"]: r["status"] for r in workflow.list_requests(db=db_url)}
    assert statuses == {"K-1": "closed", "K-2": "closed", "K-3": "received"}
    history = [h["status"] for h in workflow.get_request("K-1", db=db_url)["history"]]
    assert history == ["received", "scheduled", "unlearned", "audited", "closed"]
    assert hashlib.sha256(output.read_bytes()).hexdigest() == workflow.certificate("K-2", db=db_url)["model_after"]["weights_sha256"]


def test_one_scenario_per_batch_failed_audits_are_not_closed_and_can_be_retried(db_url, checkpoint, pool, tmp_path):
    """Random and class requests go in separate batches; a batch whose audit fails is never reported done;
    a retry with another method closes it, keeping the earlier batch's samples out of the retain set."""
    workflow.add_request("R-1", checkpoint=checkpoint, indices=[pool[20], pool[21]], db=db_url)
    workflow.add_request("C-1", checkpoint=checkpoint, scenario="class", classes=[3], db=db_url)
    messages: list[str] = []
    first = workflow.process(checkpoint, method="ga", options={"steps": 1, "lr": 0.001}, out_dir=tmp_path, db=db_url,
                             log=messages.append)
    assert first["requests"] == ["R-1"] and first["status"] == "closed"
    assert any("wait for the next run" in m for m in messages)
    after_first = Path(first["checkpoint"])

    # a tiny gradient-ascent step does not remove a whole class: the audit fails and the request says so
    second = workflow.process(after_first, method="ga", options={"steps": 1, "lr": 0.001}, out_dir=tmp_path, db=db_url)
    assert second["requests"] == ["C-1"] and second["status"] == "failed" and second["verdict"] == "fail"
    c1 = workflow.get_request("C-1", db=db_url)
    assert c1["status"] == "failed" and "audit failed" in c1["error"]
    with pytest.raises(OblivioError, match="issued only for closed requests"):
        workflow.certificate("C-1", db=db_url)
    assert workflow.process(after_first, method="dm", out_dir=tmp_path, db=db_url) is None  # failed is not pending

    third = workflow.process(after_first, method="dm", options={"max_steps": 300}, out_dir=tmp_path, db=db_url,
                             retry_failed=True)
    assert third["requests"] == ["C-1"] and third["status"] == "closed", third
    history = [h["status"] for h in workflow.get_request("C-1", db=db_url)["history"]]
    assert history == ["received", "scheduled", "unlearned", "audited", "failed",
                       "received", "scheduled", "unlearned", "audited", "closed"]
    cert = workflow.certificate("C-1", db=db_url)
    r1 = {pool[20], pool[21]}
    assert cert["split"]["earlier_forgotten"] == 2
    class3 = set(cert["samples"]["indices"])
    expected_retain = len(pool) - len(class3 | r1)
    assert cert["split"]["sizes"]["retain"] == expected_retain
    assert cert["model_before"]["id"] == first["output_version"]


def test_status_history_is_append_only(db_url, checkpoint, pool):
    workflow.add_request("H-1", checkpoint=checkpoint, indices=[pool[1]], db=db_url)
    for statement in ("UPDATE status_history SET status = 'closed'", "DELETE FROM status_history"):
        with pytest.raises(Exception, match="append-only"):
            with ledger_db.session_scope(db_url) as s:
                s.execute(text(statement))
    assert [h["status"] for h in workflow.get_request("H-1", db=db_url)["history"]] == ["received"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--indices", "99999"], "forget indices out of range [99999]"),
        (["--indices", "a,b"], "--indices must be comma-separated integers"),
        ([], "names its samples"),
        (["--scenario", "class", "--classes", "12"], "unknown class 12"),
        (["--scenario", "backdoor"], "needs a model trained with --backdoor"),
        (["--scenario", "mystery", "--indices", "1"], "unknown scenario 'mystery'"),
        (["--indices", "POOL0", "--ref", " "], "needs an external reference"),
        (["--indices", "THIRD"], "held-out third-party pool"),
    ],
)
def test_add_refuses_bad_input_with_one_clear_line(checkpoint, pool, tmp_path, args, message):
    third = min(set(range(len(pool) + 200)) - set(pool))
    args = [{"POOL0": str(pool[0]), "THIRD": str(third)}.get(a, a) for a in args]
    db = f"sqlite:///{tmp_path / 'l.db'}"
    res = cli("requests", "add", "--ref", "B-1", "--checkpoint", str(checkpoint), *args, "--db", db)
    assert isinstance(res.exception, OblivioError) and message in str(res.exception), (res.output, res.exception)
    assert count(db, Request) == 0


def test_cli_errors_are_one_line_and_change_nothing(checkpoint, pool, tmp_path):
    db = f"sqlite:///{tmp_path / 'l.db'}"
    workflow.add_request("E-1", checkpoint=checkpoint, indices=[pool[1]], db=db)
    in_process = [
        (["requests", "process", "--checkpoint", str(checkpoint), "--set", "warp=2"], "has no option warp"),
        (["requests", "export", "E-1"], "a certificate is issued only for closed requests"),
        (["requests", "show", "E-404"], "no request with external reference"),
        (["requests", "show", "E-1", "--id", "1"], "by its external reference or by --id, not both"),
        (["requests", "list", "--status", "done"], "unknown status 'done'"),
    ]
    for args, message in in_process:
        res = cli(*args, "--db", db)
        assert isinstance(res.exception, OblivioError) and message in str(res.exception), (args, res.output, res.exception)
    # through the real entry point: exit status 2, one 'error:' line, no traceback
    cases = [
        (["requests", "add", "--ref", "E-2", "--checkpoint", str(checkpoint), "--indices=-5"], "out of range"),
        (["requests", "process", "--checkpoint", str(checkpoint), "--method", "nope"], "unknown unlearning method 'nope'"),
    ]
    procs = [oblivio_subprocess(*args, "--db", db) for args, _ in cases]
    for proc, (_, message) in zip(procs, cases):
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 2, out + err
        line = (err or out).strip()  # the one error line (on stderr; stdout in older builds)
        assert line.startswith("error: ") and message in line and "\n" not in line and "Traceback" not in out + err
    assert workflow.get_request("E-1", db=db)["status"] == "received" and count(db, UnlearningRun) == 0


def test_the_default_database_is_the_current_folders(tmp_path, monkeypatch):
    """A process that changes folder (a notebook, a test run) gets the new folder's ``oblivio.db``: engines are
    cached by URL, and a relative URL cached in one folder kept its connections to that folder's file."""
    monkeypatch.delenv(ledger_db.DB_ENV, raising=False)
    monkeypatch.delenv(ledger_db.DB_FILE_ENV, raising=False)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        monkeypatch.chdir(tmp_path / name)
        ledger_db.get_engine()
        assert (tmp_path / name / "oblivio.db").is_file()


def test_db_url_resolution_and_migration_head(tmp_path, monkeypatch):
    monkeypatch.delenv(ledger_db.DB_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert ledger_db.resolve_url() == f"sqlite:///{tmp_path / 'oblivio.db'}"
    assert ledger_db.resolve_url(str(tmp_path / "x.db")) == f"sqlite:///{tmp_path / 'x.db'}"
    monkeypatch.setenv(ledger_db.DB_ENV, "sqlite:////elsewhere.db")
    assert ledger_db.resolve_url() == "sqlite:////elsewhere.db"
    with pytest.raises(OblivioError, match="unsupported database 'mysql'"):
        ledger_db.resolve_url("mysql://u@h/db")
    from alembic.script import ScriptDirectory

    engine = ledger_db.get_engine(f"sqlite:///{tmp_path / 'm.db'}")
    assert ScriptDirectory.from_config(ledger_db.alembic_config(engine)).get_current_head() == ledger_db.HEAD
    assert ledger_db.current_revision(engine) == ledger_db.HEAD
    ledger_db.downgrade(engine, "base")  # downgrade works, and upgrading again restores the schema
    assert ledger_db.current_revision(engine) is None
    ledger_db.migrate(engine)
    assert ledger_db.current_revision(engine) == ledger_db.HEAD
    ledger_db.dispose_all()


def test_a_later_batch_counts_the_lineage_earlier_deletions_for_dm(db_url, checkpoint, pool, tmp_path):
    """What earlier batches forgot is handed to the method (dm tests and matches the union), not only kept out of
    the retain set."""
    from oblivio.checkpoint import read_sidecar

    workflow.add_request("L-1", checkpoint=checkpoint, indices=[int(i) for i in pool[30:50]], db=db_url)
    first = workflow.process(checkpoint, method="dm", out_dir=tmp_path, db=db_url)
    workflow.add_request("L-2", checkpoint=first["checkpoint"], indices=[int(i) for i in pool[50:60]], db=db_url)
    second = workflow.process(first["checkpoint"], method="dm", out_dir=tmp_path, db=db_url)
    info = read_sidecar(second["checkpoint"])["extra"]["unlearning"]["info"]
    assert info["lineage_samples"] == 20 and "underpowered" not in info, info  # 30 samples in all: tested as a set
    assert "lineage_samples" not in read_sidecar(first["checkpoint"])["extra"]["unlearning"]["info"]


# ---------------------------------------------------------------- issue 26: privacy, names, leases, workers


def test_migration_0002_adds_leases_and_one_scheduled_run_per_model(db_url, checkpoint, pool):
    """0001 -> 0002 on a database holding a scheduled run; the index refuses a second one; 0002 -> 0001 works."""
    from sqlalchemy.exc import IntegrityError

    engine = ledger_db.get_engine(db_url)
    ledger_db.downgrade(engine, "0001")
    assert ledger_db.current_revision(engine) == "0001"
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO model_version (id, weights_sha256, model_hash, checkpoint_path, dataset, split_hashes, "
                          "created_at) VALUES (1, 'ab', 'cd', 'm.safetensors', '{}', '{}', CURRENT_TIMESTAMP)"))
        conn.execute(text("INSERT INTO unlearning_run (input_version_id, status, method, options, seed, output_path, "
                          "scheduled_at) VALUES (1, 'scheduled', 'ga', '{}', 0, 'o', CURRENT_TIMESTAMP)"))
    ledger_db.migrate(engine)
    assert ledger_db.current_revision(engine) == ledger_db.HEAD == "0002"
    with engine.connect() as conn:
        assert conn.execute(text("SELECT claimed_by, lease_until FROM unlearning_run")).all() == [(None, None)]
    with pytest.raises(IntegrityError):
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO unlearning_run (input_version_id, status, method, options, seed, output_path, "
                              "scheduled_at) VALUES (1, 'scheduled', 'ga', '{}', 0, 'o2', CURRENT_TIMESTAMP)"))
    with engine.begin() as conn:  # a closed run beside the scheduled one is fine
        conn.execute(text("INSERT INTO unlearning_run (input_version_id, status, method, options, seed, output_path, "
                          "scheduled_at) VALUES (1, 'closed', 'ga', '{}', 0, 'o3', CURRENT_TIMESTAMP)"))
    ledger_db.downgrade(engine, "0001")
    ledger_db.migrate(engine)
    assert ledger_db.current_revision(engine) == "0002"


def test_output_names_do_not_grow_along_a_chain(checkpoint, pool, tmp_path):
    """Chained runs are named after the lineage's first checkpoint: model.run-1, model.run-2, model.run-3."""
    db = f"sqlite:///{tmp_path / 'l.db'}"
    current = checkpoint
    for k in range(1, 4):
        workflow.add_request(f"N-{k}", checkpoint=current, indices=[pool[60 + k]], db=db)
        run = workflow.process(current, method="ga", options={"steps": 1, "lr": 0.001}, out_dir=tmp_path, db=db)
        assert run["status"] == "closed", run
        current = Path(run["checkpoint"])
        assert current.name == f"model.run-{k}.safetensors"


def test_sqlite_ledger_files_are_private_whatever_the_umask(checkpoint, pool, tmp_path):
    """D11: the database and its -wal/-shm files are 0600 under umask 022; an existing 0644 file is tightened."""
    import stat

    old = os.umask(0o022)
    try:
        db = f"sqlite:///{tmp_path / 'private.db'}"
        workflow.add_request("P-1", checkpoint=checkpoint, indices=[pool[70]], db=db)
        files = [tmp_path / n for n in ("private.db", "private.db-wal", "private.db-shm")]
        assert all(f.exists() for f in files)
        assert {oct(stat.S_IMODE(f.stat().st_mode)) for f in files} == {oct(0o600)}
        ledger_db.dispose_all()
        loose = tmp_path / "loose.db"
        loose.touch(mode=0o644)
        os.chmod(loose, 0o644)
        ledger_db.get_engine(f"sqlite:///{loose}")
        assert stat.S_IMODE(loose.stat().st_mode) == 0o600
    finally:
        os.umask(old)
        ledger_db.dispose_all()


def test_database_url_from_a_file_and_never_a_password_on_the_command_line(tmp_path, monkeypatch):
    """D11: --db with a password is refused (the process list shows it); $OBLIVIO_DB_URL_FILE names a file holding the URL."""
    monkeypatch.delenv(ledger_db.DB_ENV, raising=False)
    url_file = tmp_path / "db-url"
    url_file.write_text(f"sqlite:///{tmp_path / 'from-file.db'}\n")
    monkeypatch.setenv(ledger_db.DB_FILE_ENV, str(url_file))
    assert ledger_db.resolve_url() == f"sqlite:///{tmp_path / 'from-file.db'}"
    assert "[]" in ok("requests", "list", "--json")
    assert (tmp_path / "from-file.db").exists()
    res = runner.invoke(app, ["requests", "list", "--db", "postgresql+psycopg://user:hunter2@127.0.0.1:1/x"])
    assert isinstance(res.exception, OblivioError) and "process list" in str(res.exception)
    assert "hunter2" not in str(res.exception)
    monkeypatch.setenv(ledger_db.DB_FILE_ENV, str(tmp_path / "missing"))
    with pytest.raises(OblivioError, match="cannot read"):
        ledger_db.resolve_url()


def test_cli_prints_filers_text_as_plain_text(checkpoint, pool, tmp_path):
    """D7: references written before the character set was enforced (markup, links, escape sequences) print literally."""
    db = f"sqlite:///{tmp_path / 'l.db'}"
    workflow.add_request("plain-1", checkpoint=checkpoint, indices=[pool[80]], db=db)
    nasty = ["x[/]", "[link=https://evil.example]click[/link]", "\x1b[31mred\x1b]8;;x\x07", "\u202egnp.exe"]
    with ledger_db.session_scope(db) as s:
        base = s.scalars(select(Request)).one()
        for i, ref in enumerate(nasty):
            s.add(Request(external_ref=ref, model_version_id=base.model_version_id, scenario=base.scenario,
                          sample_ids=[pool[81 + i]], sample_hashes=["0" * 64], reason=None, status="received"))
    res = runner.invoke(app, ["requests", "list", "--db", db], env={"COLUMNS": "250"})
    assert res.exit_code == 0, (res.output, res.exception)
    assert "x[/]" in res.output and "[link=https://evil.example]click[/link]" in res.output
    assert "\x1b" not in res.output and "\u202e" not in res.output and "\\x1b[31mred" in res.output


def test_a_live_claim_is_never_redone_and_a_dead_one_is_resumed(checkpoint, pool, tmp_path):
    """A run another live worker holds is refused (not redone); once its lease runs out, the next process resumes it."""
    from datetime import timedelta

    from oblivio.ledger.models import utcnow

    db = f"sqlite:///{tmp_path / 'l.db'}"
    workflow.add_request("L-1", checkpoint=checkpoint, indices=[pool[90]], db=db)
    workflow.register_model(checkpoint, db=db)
    job = workflow.claim_next(db, method="ga", options={"steps": 1, "lr": 0.001}, worker="elsewhere:1:feed", lease_s=600)
    assert job["requests"][0]["external_ref"] == "L-1"
    with pytest.raises(workflow.InProgress, match="in progress"):
        workflow.process(checkpoint, method="ga", options={"steps": 1, "lr": 0.001}, out_dir=tmp_path, db=db)
    assert workflow.claim_next(db, worker="another:2:beef") is None  # a second worker does not take it either
    with ledger_db.session_scope(db) as s:
        s.get(UnlearningRun, job["run_id"]).lease_until = utcnow() - timedelta(seconds=1)
    messages: list[str] = []
    run = workflow.process(checkpoint, method="ga", options={"steps": 1, "lr": 0.001}, out_dir=tmp_path, db=db, log=messages.append)
    assert run["status"] == "closed" and any("resuming run" in m for m in messages)
    history = [h["status"] for h in workflow.get_request("L-1", db=db)["history"]]
    assert history == ["received", "scheduled", "unlearned", "audited", "closed"]


def _wait(predicate, timeout: float, what: str) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_two_workers_on_postgresql_one_killed_mid_batch(checkpoint, pool, tmp_path):
    """Two `oblivio worker` processes on PostgreSQL, two models with pending requests; the first worker is killed
    (SIGKILL) in the middle of its batch. The other resumes it: every request closes exactly once, two runs in all."""
    with database("postgresql", tmp_path) as db:
        second = tmp_path / "other.safetensors"
        ok("train", "--epochs", "3", "--seed", "1", "--no-progress", "--out", str(second))
        for ref, ck, i in (("W-1", checkpoint, 100), ("W-2", checkpoint, 101), ("W-3", second, 102), ("W-4", second, 103)):
            workflow.add_request(ref, checkpoint=ck, indices=[pool[i]], db=db)
        args = ["worker", *FAST, "--out-dir", str(tmp_path / "out"), "--poll", "0.2", "--lease", "3", "--db", db]
        doomed = oblivio_subprocess(*args, env={workflow.CRASH_ENV: "unlearned"})

        def claimed() -> bool:
            with ledger_db.session_scope(db, write=False) as s:
                return s.scalar(select(func.count()).select_from(UnlearningRun)) >= 1

        _wait(claimed, 120, "the first worker's claim")
        survivor = oblivio_subprocess(*args)
        try:
            doomed.communicate(timeout=120)
            assert doomed.returncode == -signal.SIGKILL  # killed mid-batch: after unlearning, before recording

            def all_closed() -> bool:
                return {r["status"] for r in workflow.list_requests(db=db)} == {"closed"}

            _wait(all_closed, 180, "every request to close")
        finally:
            survivor.send_signal(signal.SIGTERM)
            out, err = survivor.communicate(timeout=120)
        assert "resuming run" in out, out + err
        with ledger_db.session_scope(db, write=False) as s:
            runs = s.scalars(select(UnlearningRun).order_by(UnlearningRun.id)).all()
            assert [r.status for r in runs] == ["closed", "closed"]
            assert len({r.input_version_id for r in runs}) == 2
        for ref in ("W-1", "W-2", "W-3", "W-4"):
            history = [h["status"] for h in workflow.get_request(ref, db=db)["history"]]
            assert history == ["received", "scheduled", "unlearned", "audited", "closed"], (ref, history)
        cert = workflow.certificate("W-3", db=db)
        assert cert["model_after"]["checkpoint"].endswith("other.run-2.safetensors") or \
            cert["model_after"]["checkpoint"].endswith("other.run-1.safetensors")
