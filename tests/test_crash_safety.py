"""Checkpoint pairs are one unit (issue 10, case 4): crashes, strays, two writers, a damaged bench cache."""
from __future__ import annotations

import fcntl
import json
import os
import random
import signal
import sys
import time
from pathlib import Path

import pytest

from oblivio import OblivioError, build_model, load_checkpoint, save_checkpoint
from oblivio.checkpoint import checkpoint_lock, model_hash, sidecar_path
from oblivio.io import TMP_SUFFIX, WRITE_CHECK_PREFIX, journal_path, lock_path


class Killed(BaseException):
    """Stands in for SIGKILL inside the process: nothing after it runs, no cleanup beyond ``finally``."""


def _save(path, seed, **kw):
    model = build_model("mlp", (1, 8, 8), 10, seed=seed)
    save_checkpoint(path, model, arch="mlp", input_shape=(1, 8, 8), num_classes=10, seed=seed, **kw)
    return model_hash(model)


def _hidden(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("crash_at", [0, 1, 2])
def test_a_crash_during_the_commit_leaves_the_old_or_the_new_pair(tmp_path, monkeypatch, crash_at):
    """crash_at 0: before the commit point (old pair survives); 1, 2: between the renames (rolled forward)."""
    import oblivio.io as oio

    path = tmp_path / "m.safetensors"
    old = _save(path, seed=1)
    calls = {"n": 0}
    real_replace, real_write = os.replace, oio.atomic_write_text

    def replace(src, dst):
        if str(src).endswith(".tmp") and not Path(dst).name.startswith("."):
            calls["n"] += 1
            if calls["n"] == crash_at:
                raise Killed
        return real_replace(src, dst)

    def write_journal(p, text):
        if crash_at == 0:
            raise Killed
        return real_write(p, text)

    monkeypatch.setattr(oio.os, "replace", replace)
    monkeypatch.setattr(oio, "atomic_write_text", write_journal)
    with pytest.raises(Killed):
        new = _save(path, seed=2)
    monkeypatch.undo()
    new = model_hash(build_model("mlp", (1, 8, 8), 10, seed=2))
    model, meta = load_checkpoint(path)  # the reader finishes an interrupted commit
    assert model_hash(model) == meta["model_hash"] == (old if crash_at == 0 else new)
    assert not journal_path(path).exists()
    with checkpoint_lock(path):  # the next writer's start removes strays
        pass
    assert _hidden(tmp_path) == []


def test_stray_temp_files_are_removed_when_a_writer_starts(tmp_path):
    path = tmp_path / "m.safetensors"
    for name in (".m.safetensors.abc123.tmp", ".m.json.x.tmp", ".m.split.json.y.tmp"):
        (tmp_path / name).write_bytes(b"x" * 1000)
    _save(path, seed=1)
    assert _hidden(tmp_path) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.safetensors"]


def test_a_second_writer_of_the_same_output_fails_clearly(tmp_path):
    path = tmp_path / "m.safetensors"
    other = os.open(lock_path(path), os.O_RDWR | os.O_CREAT)  # another process's lock (own open file description)
    fcntl.flock(other, fcntl.LOCK_EX)
    try:
        with pytest.raises(OblivioError, match="is being written by another oblivio process"):
            _save(path, seed=1)
        assert not path.exists()
    finally:
        fcntl.flock(other, fcntl.LOCK_UN)
        os.close(other)
    _save(path, seed=1)


def test_the_bench_cache_rebuilds_a_damaged_model(tmp_path):
    from oblivio.bench.store import Store

    store = Store(tmp_path)
    built = []

    def build():
        built.append(1)
        return build_model("mlp", (1, 8, 8), 10, seed=3), {"seconds": 1.0}

    meta = dict(arch="mlp", input_shape=(1, 8, 8), num_classes=10, dataset="digits", seed=0)
    store.model("k", build, **meta)
    path = store.model_path("k")
    data = bytearray(path.read_bytes())
    data[-10:] = b"\0" * 10  # bit rot in the weights
    path.write_bytes(bytes(data))
    model, record = store.model("k", build, **meta)
    assert len(built) == 2 and store.rebuilt == 1 and record == {"seconds": 1.0}
    assert load_checkpoint(path)[1]["model_hash"] == model_hash(model)


# -- SIGKILL at random moments ---------------------------------------------------------------------

def _forget_args(checkpoint: Path, out: Path, seed: int) -> list[str]:
    return ["forget", "--checkpoint", str(checkpoint), "--out", str(out), "--classes", "3", "--method", "ga",
            "--seed", str(seed)]


def _run_cli(args: list[str]) -> None:
    """Child process body: the real ``oblivio`` entry point with ``args``, output discarded."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    sys.argv = ["oblivio", *args]
    from oblivio.cli import main

    try:
        main()
    except SystemExit as e:
        os._exit(e.code or 0)
    os._exit(0)


def _spawn(args: list[str]):
    """``oblivio ARGS`` in a forked child (imports already done, so a try costs the command's own work)."""
    import multiprocessing

    proc = multiprocessing.get_context("fork").Process(target=_run_cli, args=(args,))
    proc.start()
    return proc


def _state(out: Path) -> str | None:
    """None when no result is there, else the model hash of a complete, consistent result (else the test fails)."""
    split = out.parent / f"{out.stem}.split.json"
    if not out.exists():
        assert not sidecar_path(out).exists() and not split.exists(), "a sidecar or split without weights"
        return None
    model, meta = load_checkpoint(out)  # weights match the sidecar (raises otherwise)
    assert json.loads(split.read_text())["hashes"] == meta["split"]["hashes"], "split of another result"
    return meta["model_hash"]


@pytest.mark.slow
def test_sigkill_at_random_moments_leaves_absent_previous_or_new_never_a_mix(tmp_path):
    """20 ``oblivio forget`` runs killed with SIGKILL at uniform random moments of their run time, half of
    them over a previous result: afterwards the output is absent, the previous result or the new one."""
    import torch

    torch.set_num_threads(1)
    ckpt = tmp_path / "model.safetensors"
    proc = _spawn(["train", "--epochs", "3", "--no-progress", "--out", str(ckpt)])
    proc.join()
    assert proc.exitcode == 0
    prev_out, new_out = tmp_path / "prev" / "f.safetensors", tmp_path / "new" / "f.safetensors"
    proc = _spawn(_forget_args(ckpt, prev_out, 1))
    proc.join()
    start = time.monotonic()
    proc = _spawn(_forget_args(ckpt, new_out, 0))
    proc.join()
    runtime = time.monotonic() - start
    assert proc.exitcode == 0
    previous, new = _state(prev_out), _state(new_out)
    assert previous is not None and new is not None and previous != new
    rng = random.Random(0)
    seen = {"absent": 0, "previous": 0, "new": 0}
    for attempt in range(20):
        out = tmp_path / f"try{attempt}" / "f.safetensors"
        out.parent.mkdir()
        had_previous = attempt % 2 == 1
        if had_previous:
            for f in prev_out.parent.iterdir():
                (out.parent / f.name).write_bytes(f.read_bytes())
        proc = _spawn(_forget_args(ckpt, out, 0))
        time.sleep(rng.uniform(0.0, 1.1) * runtime)
        if proc.is_alive():
            os.kill(proc.pid, signal.SIGKILL)
        proc.join()
        state = _state(out)
        allowed = {new, previous if had_previous else None}
        assert state in allowed, (attempt, state)
        seen["absent" if state is None else "previous" if state == previous else "new"] += 1
        with checkpoint_lock(out):  # the next writer's start: no stray files survive it
            pass
        assert _hidden(out.parent) == [], _hidden(out.parent)
    assert sum(seen.values()) == 20
    print("SIGKILL outcomes:", seen, f"(forget run time {runtime:.1f} s)")


def test_a_write_check_probe_left_by_a_killed_process_is_swept_by_the_next_writer(tmp_path):
    """``check_writable`` creates and deletes a probe file; a SIGKILL between the two leaves it behind (seen once in
    the kill loop above): the next writer's lock removes it with the other strays."""
    out = tmp_path / "f.safetensors"
    probe = tmp_path / f"{WRITE_CHECK_PREFIX}abc123{TMP_SUFFIX}"
    probe.write_bytes(b"")
    with checkpoint_lock(out):
        pass
    assert _hidden(tmp_path) == []


def test_the_weights_are_written_into_our_own_temp_file(tmp_path, monkeypatch):
    """safetensors' ``save_file`` writes a temp file of its own (``.tmpXXXXXX``, Rust's tempfile crate) beside the
    target and renames it over: a kill in between left a stray the next writer does not know (found by the kill test
    above in CI). The weights now go into oblivio's temp file itself: the file committed is the inode it created."""
    import oblivio.io as oio

    created: dict[str, int] = {}
    make_temp = oio._temp_beside

    def recording(path):
        tmp = make_temp(path)
        created[Path(path).name] = tmp.stat().st_ino
        return tmp

    monkeypatch.setattr(oio, "_temp_beside", recording)
    path = tmp_path / "m.safetensors"
    _save(path, seed=1)
    assert path.stat().st_ino == created["m.safetensors"]
    assert _hidden(tmp_path) == []
