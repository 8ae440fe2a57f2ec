"""Devices: the --device / device= choice everywhere, data kept on the device for batching (same numbers
as a DataLoader), the header naming the device that computed, and safeguards / warnings of methods."""
from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset
from typer.testing import CliRunner

import oblivio.batching as batching
from oblivio import OblivioError, TrainConfig, accuracy, evaluate, load_checkpoint, train, unlearn
from oblivio.batching import DeviceData
from oblivio.bench import parse_config, read_csv, run_benchmark
from oblivio.cli import app
from oblivio.device import autocast, check_amp, device_info, resolve_device
from oblivio.methods.common import run_epochs
from oblivio.methods.l1_sparse import l1_norm
from oblivio.training import predict

runner = CliRunner()


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "oblivio.cli", *args], capture_output=True, text=True)


# -- resolve_device -------------------------------------------------------------------------------------------
def test_cpu_and_auto_resolve_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(None) == torch.device("cpu")


def test_cuda_without_a_gpu_is_a_one_line_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for spec in ("cuda", "cuda:0"):
        with pytest.raises(OblivioError, match=f"--device {spec}: no CUDA device is available"):
            resolve_device(spec)


def test_cuda_index_beyond_the_gpus_present_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert resolve_device("auto") == resolve_device("cuda") == torch.device("cuda:0")
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(OblivioError, match="only 1 CUDA device"):
        resolve_device("cuda:3")


@pytest.mark.parametrize("spec", ["gpu", "cuda0", "cuda:x", "tpu", ""])
def test_bad_device_strings_are_refused(spec):
    if spec == "":
        assert resolve_device(spec) == resolve_device("auto")  # empty means the default
        return
    with pytest.raises(OblivioError, match="unknown device"):
        resolve_device(spec)


def test_amp_modes_and_device_info():
    assert check_amp(None) is None and check_amp("bf16") == "bf16"
    with pytest.raises(OblivioError, match="--amp fp8"):
        check_amp("fp8")
    with autocast("cpu", "bf16"):
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.bfloat16
    info = device_info("cpu")
    assert info["device"] == "cpu" and info["gpu"] is None and info["torch"] == torch.__version__


# -- CLI ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", [
    ["train", "--epochs", "1", "--out", "{tmp}/m.safetensors"],
    ["forget", "--checkpoint", "{tmp}/m.safetensors", "--out", "{tmp}/f.safetensors"],
    ["audit", "--checkpoint", "{tmp}/f.safetensors"],
    ["bench", "--config", "benchmarks/digits.yaml", "--out", "{tmp}/bench"],
])
def test_device_cuda_without_a_gpu_exits_2_with_one_line(command, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    proc = cli(*[c.format(tmp=tmp_path) for c in command], "--device", "cuda")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.strip() == "error: --device cuda: no CUDA device is available"
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "m.safetensors").exists()


def test_bad_device_string_exits_2(tmp_path):
    proc = cli("train", "--epochs", "1", "--out", str(tmp_path / "m.safetensors"), "--device", "gpu")
    assert proc.returncode == 2 and "unknown device" in proc.stderr and "Traceback" not in proc.stderr


def test_train_forget_audit_run_with_device_cpu(tmp_path):
    model = tmp_path / "model.safetensors"
    res = runner.invoke(app, ["train", "--epochs", "2", "--no-progress", "--out", str(model), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "on cpu" in res.output
    _, meta = load_checkpoint(model)
    assert meta["extra"]["device"]["device"] == "cpu"
    out = tmp_path / "forget.safetensors"
    res = runner.invoke(app, ["forget", "--checkpoint", str(model), "--out", str(out), "--method", "ft", "--classes", "3",
                              "--set", "epochs=1", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert load_checkpoint(out)[1]["extra"]["unlearning"]["device"]["device"] == "cpu"
    res = runner.invoke(app, ["audit", "--checkpoint", str(out), "--out", str(tmp_path / "audit"), "--device", "cpu"])
    assert res.exit_code == 0, res.output


# -- batching -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n, batch", [(103, 16), (96, 32), (5, 8)])
def test_device_batches_follow_a_seeded_dataloaders_order(n, batch):
    data = TensorDataset(torch.arange(float(n))[:, None], torch.arange(n))
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    fast = DeviceData(data, "cpu")
    for _ in range(3):  # several epochs from one generator, as training draws them
        ref = [y for _, y in DataLoader(data, batch_size=batch, shuffle=True, generator=g1)]
        got = [y for _, y in fast.epoch(batch, g2)]
        assert len(ref) == len(got) and all(torch.equal(a, b) for a, b in zip(ref, got))


@pytest.mark.parametrize("n, batch, last", [(3600, 256, (3328, 3600)), (3720, 256, (3584, 3720)), (100, 256, (0, 100)),
                                            (96, 32, (64, 96))])
def test_a_tiny_last_batch_joins_the_one_before_and_the_order_is_kept(n, batch, last):
    bounds = batching.batch_bounds(n, batch, merge_small_last=True)
    assert bounds[-1] == last and bounds[0][0] == 0 and all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    assert batching.batch_bounds(3600, 256)[-1] == (3584, 3600)  # without merging: the DataLoader's 16-sample batch
    data = TensorDataset(torch.zeros(n, 1), torch.arange(n))
    merged = [y for _, y in DeviceData(data, "cpu").epoch(batch, torch.Generator().manual_seed(1), merge_small_last=True)]
    plain = [y for _, y in DeviceData(data, "cpu").epoch(batch, torch.Generator().manual_seed(1))]
    assert torch.equal(torch.cat(merged), torch.cat(plain))  # the same samples in the same order, once each
    assert [len(y) for y in merged] == [j - i for i, j in bounds]


def test_training_and_prediction_are_the_same_with_data_on_or_off_the_device(splits, monkeypatch):
    data = splits["random"].train
    a, ha = train("mlp", data, 10, TrainConfig(seed=3, epochs=2), device="cpu")
    monkeypatch.setattr(batching, "fits_on", lambda device, nbytes, share=0.25: False)  # the "too big" path
    assert not DeviceData(data, "cpu").resident
    b, hb = train("mlp", data, 10, TrainConfig(seed=3, epochs=2), device="cpu")
    assert ha.loss == hb.loss
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    logits, labels = predict(a, splits["random"].test, batch_size=50)
    ref = torch.cat([a(x) for x, _ in DataLoader(splits["random"].test, batch_size=50)])
    assert torch.allclose(logits, ref) and torch.equal(labels, splits["random"].test.tensors[1])


def test_unlearn_never_moves_the_input_model_and_same_seed_gives_same_numbers(splits, original):
    model = original("class")
    before = next(model.parameters()).device
    a = unlearn(model, split=splits["class"], method="scrub", device="cpu", seed=1)
    b = unlearn(model, split=splits["class"], method="scrub", device="cpu", seed=1)
    assert next(model.parameters()).device == before
    assert all(torch.equal(p, q) for p, q in zip(a.model.state_dict().values(), b.model.state_dict().values()))
    assert a.info == b.info


# -- numerical soundness and safeguards -----------------------------------------------------------------------
def test_scrub_with_many_max_steps_no_longer_diverges(splits, original):
    """Upstream's max-step (no mask, no cap) gave NaN here (digits class 3, forget batch 8) and retain 11% on random 10%."""
    for name, floor in (("class", 0.95), ("random", 0.8)):
        split = splits[name]
        result = unlearn(original(name), split=split, method="scrub", seed=0, forget_batch_size=8)
        assert accuracy(result.model, split.retain) > floor, name
        assert "warnings" not in result.info
    capped = unlearn(original("random"), split=splits["random"], method="scrub", seed=0, forget_batch_size=4, msteps=3,
                     max_grad_norm=3.0)
    assert accuracy(capped.model, splits["random"].retain) > 0.8


def test_ga_safeguard_undoes_the_step_that_collapses_retain_accuracy(splits, original):
    split = splits["random"]
    model = original("random")
    result = unlearn(model, split=split, method="ga", lr=0.4, steps=10)  # step 2 costs 23 points of the probe
    info = result.info
    assert info["safeguard"] == "retain_drop" and info["stopped_by"] == "safeguard"
    assert info["steps"] == info["safeguard_step"] - 1
    assert accuracy(result.model, split.retain) >= accuracy(model, split.retain) - 0.07
    off = unlearn(model, split=split, method="ga", lr=0.4, steps=10, max_retain_drop=1.0)
    assert "safeguard" not in off.info
    assert any("retain accuracy collapsed" in w for w in off.info["warnings"])  # the generic check


def test_scrub_safeguard_ends_the_max_steps_before_a_runaway(splits, original):
    """lr 0.05 with many small forget batches: without the safeguard the max-steps run away (retain 10%)."""
    split, model = splits["random"], original("random")
    options = dict(lr=0.05, forget_batch_size=4, msteps=3)
    result = unlearn(model, split=split, method="scrub", seed=0, **options)
    info = result.info
    assert info["safeguard"] == "retain_drop" and info["max_steps"] == info["safeguard_step"] - 1
    assert info["probe_retain_acc_at_stop"] < info["probe_retain_acc_original"] - 0.15
    assert accuracy(result.model, split.retain) >= accuracy(model, split.retain) - 0.05
    assert "warnings" not in info
    off = unlearn(model, split=split, method="scrub", seed=0, max_retain_drop=1.0, **options)
    assert "safeguard" not in off.info and any("retain accuracy collapsed" in w for w in off.info["warnings"])


def test_scrub_judges_moved_samples_in_eval_mode_and_leaves_train_mode_on():
    """A BatchNorm net predicts differently on a one-class batch in train mode (batch statistics) than in eval
    mode; scrub's mask must see the eval-mode prediction, as the model is used."""
    from oblivio.methods.scrub import predict_eval

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    with torch.no_grad():
        net[1].running_mean.fill_(5.0)  # running statistics far from any one batch's
    x = torch.randn(16, 4)
    net.train()
    got = predict_eval(net, x)
    assert net.training
    assert torch.equal(got, net.eval()(x).argmax(1))
    assert not torch.equal(got, net.train()(x).argmax(1))


@pytest.fixture(scope="module")
def digits_cnn_backdoor(splits):
    """A BatchNorm CNN trained on the digits backdoor split (seed 0): ASR 100%."""
    split = splits["backdoor"]
    return split, train("cnn", split.train, 10, TrainConfig(seed=0))[0]


def test_scrub_backoff_halves_the_max_step_rate_instead_of_ending_the_max_steps(digits_cnn_backdoor):
    """With a 5-point safeguard the second max-step costs 12 points of the probe: ending the max-steps there
    keeps the trigger (ASR ~80%); undoing it and halving the max-step rate lets the max-steps remove it."""
    split, model = digits_cnn_backdoor
    result = unlearn(model, split=split, method="scrub", seed=0, max_retain_drop=0.05)
    assert result.info["max_step_backoffs"] >= 1 and "safeguard" not in result.info
    assert evaluate(result.model, split)["asr"] < 0.1 and accuracy(result.model, split.retain) > 0.97
    ended = unlearn(model, split=split, method="scrub", seed=0, max_retain_drop=0.05, max_backoffs=0)
    assert ended.info["safeguard"] == "retain_drop"
    assert evaluate(ended.model, split)["asr"] > 0.5


def test_neggrad_plus_safeguard_undoes_the_step_that_collapses_retain_accuracy(splits, original):
    """With its paper defaults NegGrad+ ascends the forgotten class until retain accuracy is 11%."""
    split, model = splits["class"], original("class")
    result = unlearn(model, split=split, method="neggrad+", seed=0)
    info = result.info
    assert info["safeguard"] == "retain_drop" and info["steps"] == info["safeguard_step"] - 1
    assert accuracy(result.model, split.retain) >= accuracy(model, split.retain) - 0.07
    assert accuracy(result.model, split.forget) < 0.5 * accuracy(model, split.forget)
    off = unlearn(model, split=split, method="neggrad+", seed=0, max_retain_drop=1.0)
    assert any("retain accuracy collapsed" in w for w in off.info["warnings"])


def test_l1_sparse_safeguard_backs_off_before_the_penalty_collapses_the_model(splits, original):
    """alpha 0.05 shrinks every weight to nothing (retain 10%); the safeguard undoes the steps since its last
    good check and halves alpha, so the run goes on with a penalty the model can bear."""
    split, model = splits["random"], original("random")
    result = unlearn(model, split=split, method="l1-sparse", seed=0, alpha=0.05)
    info = result.info
    assert info["safeguard"] in ("retain_drop_backoff", "retain_drop_stop") and info["backoffs"] >= 1
    assert info["final_alpha"] == 0.05 / 2 ** info["backoffs"]
    assert info["backoffs"] <= info["steps_undone"] < info["steps"]  # every backoff undid at least one step
    assert accuracy(result.model, split.retain) >= accuracy(model, split.retain) - 0.22  # 20 points on the probe
    assert l1_norm(result.model) < 0.5 * l1_norm(model)  # it did sparsify, within the guard
    off = unlearn(model, split=split, method="l1-sparse", seed=0, alpha=0.05, max_retain_drop=1.0)
    assert "safeguard" not in off.info and any("retain accuracy collapsed" in w for w in off.info["warnings"])
    default = unlearn(model, split=split, method="l1-sparse", seed=0)
    assert "safeguard" not in default.info  # a transient dip of the defaults is left alone


def test_ssd_safeguard_raises_alpha_instead_of_collapsing_the_model(splits, original):
    """With the reference code's mini-batch estimate, the capped alpha dampens too much of this MLP on a random
    10% request; the safeguard raises alpha until the retain probe holds."""
    split, model = splits["random"], original("random")
    result = unlearn(model, split=split, method="ssd", seed=0, per_sample=False)
    info = result.info
    assert info["safeguard"] == "alpha_raised" and info["final_alpha"] > info["alpha_capped"]
    assert accuracy(result.model, split.retain) > 0.8
    off = unlearn(model, split=split, method="ssd", seed=0, per_sample=False, max_retain_drop=1.0)
    assert off.info["dampened"] > info["dampened"]
    assert any("retain accuracy collapsed" in w for w in off.info["warnings"])


def test_boundary_safeguard_stops_fine_tuning_before_a_collapse(splits, original):
    split = splits["random"]
    model = original("random")
    result = unlearn(model, split=split, method="boundary", lr=0.01)  # epoch 2 costs 31 points on the probe
    assert result.info["safeguard"] == "retain_drop_stop" and result.info["safeguard_epoch"] >= 2
    assert accuracy(result.model, split.retain) >= accuracy(model, split.retain) - 0.2
    assert "warnings" not in result.info
    with pytest.raises(OblivioError, match="nothing was forgotten"):  # never reported done with the original back
        unlearn(model, split=split, method="boundary", lr=0.5)


class _ScriptedGuard:
    """RetainGuard's interface for run_epochs, with check results given in advance."""

    def __init__(self, results: list[bool], max_backoffs: int = 0):
        self.results, self.max_backoffs, self.backoffs, self.at = list(results), max_backoffs, 0, []
        self.active, self.weights, self.undone = True, [], []

    def snapshot(self, model):
        return copy.deepcopy(model.state_dict())

    def check(self, model) -> bool:
        self.weights.append(model.weight.detach().clone())
        return self.results.pop(0)

    def backoff(self, epoch: int, step: int, undone: int = 0) -> None:
        self.backoffs += 1
        self.at.append((epoch, step))
        self.undone.append(undone)


def test_run_epochs_checks_within_long_epochs_and_undoes_only_the_steps_since_the_last_good_check():
    data = TensorDataset(torch.randn(100, 3), torch.randint(0, 2, (100,)))
    model = torch.nn.Linear(3, 2)
    guard = _ScriptedGuard([True, False])  # the check after step 3 holds, the one after step 6 fails
    steps = run_epochs(model, data, torch.nn.functional.cross_entropy, epochs=2, lr=0.5, batch_size=10, seed=0,
                       guard=guard, check_every=3)
    assert steps == 6 and guard.at == [(1, 6)] and guard.undone == [3]  # stopped mid-epoch, steps 4-6 undone
    assert torch.equal(model.weight, guard.weights[0])  # back to the weights of the check that held
    assert not torch.equal(model.weight, guard.weights[1])
    backing_off = _ScriptedGuard([True, False, True, True, True, True, True, True], max_backoffs=1)
    steps = run_epochs(torch.nn.Linear(3, 2), data, torch.nn.functional.cross_entropy, epochs=2, lr=0.5,
                       batch_size=10, seed=0, guard=backing_off, check_every=3)
    assert steps == 20 and backing_off.at == [(1, 6)]  # one backoff (lr halved), then both epochs run on
    assert backing_off.undone == [3]  # 20 steps taken, 17 kept
    epoch_only = _ScriptedGuard([True, True])
    run_epochs(torch.nn.Linear(3, 2), data, torch.nn.functional.cross_entropy, epochs=2, lr=0.5, batch_size=10,
               seed=0, guard=epoch_only)
    assert epoch_only.results == []  # without check_every: one check per epoch


def test_run_epochs_backoff_halves_lr_unless_the_method_weakens_something_else(monkeypatch):
    data = TensorDataset(torch.randn(100, 3), torch.randint(0, 2, (100,)))
    sgd_step, lrs = torch.optim.SGD.step, []

    def recording_step(self, *args, **kwargs):  # the learning rate of every step run_epochs takes
        lrs.append(self.param_groups[0]["lr"])
        return sgd_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", recording_step)
    calls: list = []
    for hook in (None, lambda: calls.append("weakened")):
        lrs.clear()
        run_epochs(torch.nn.Linear(3, 2), data, torch.nn.functional.cross_entropy, epochs=1, lr=0.5, batch_size=10,
                   seed=0, guard=_ScriptedGuard([False, True, True, True], max_backoffs=1), check_every=3,
                   on_backoff=hook)
        assert set(lrs) == ({0.5, 0.25} if hook is None else {0.5})  # the first check failed: one backoff
    assert calls == ["weakened"]


def test_unsir_impairs_again_more_gently_when_repair_cannot_recover(splits, original):
    """Adam at 0.2 in the impair step wrecks this MLP beyond what 15 repair epochs fix; a gentler retry recovers."""
    split = splits["random"]
    model = original("random")
    result = unlearn(model, split=split, method="unsir", impair_lr=0.2)
    info = result.info
    assert info["safeguard"] == "impair_retry" and info["impair_attempts"] >= 2
    assert info["impair_lr"] == 0.2 / 2 ** (info["impair_attempts"] - 1)  # halved at each retry
    assert accuracy(result.model, split.retain) >= accuracy(model, split.retain) - 0.07
    assert "warnings" not in info
    assert "safeguard" not in unlearn(model, split=split, method="unsir").info  # defaults: nothing fires on digits


def test_bench_shows_warnings_and_the_device(tmp_path):
    config = parse_config({
        "name": "warn", "dataset": {"name": "digits"}, "model": "mlp", "train": {"epochs": 3}, "seeds": [0],
        "threads": 1, "scenarios": {"random": {"fraction": 0.1}}, "device": "cpu",
        "methods": [{"ga": {"lr": 0.5, "steps": 10, "max_retain_drop": 1.0}}],
    })
    result = run_benchmark(config, tmp_path, progress=False)
    assert result.header["device"] == "cpu" and "amp" in result.header
    text = (tmp_path / "results.md").read_text()
    assert "## Warnings" in text and "retain accuracy collapsed" in text and "ga (1 warned)" in text
    rows = {r["method"]: r for r in read_csv(tmp_path / "runs.csv")}
    assert "retain accuracy collapsed" in rows["ga"]["warnings"] and not rows["original"]["warnings"]
    summary = {r["method"]: r for r in read_csv(tmp_path / "summary.csv")}
    assert summary["ga"]["warned"] == "1"


def test_bench_config_device_keys_are_validated():
    base = {"name": "x", "dataset": "digits", "scenarios": {"random": {"fraction": 0.1}}}
    cfg = parse_config(base | {"device": "cpu", "amp": "bf16", "deterministic": True})
    assert (cfg.device, cfg.amp, cfg.deterministic) == ("cpu", "bf16", True)
    assert parse_config(base).hash() == parse_config(base | {"device": "cpu"}).hash()  # where, not what
    assert parse_config(base).hash() != cfg.hash()
    for bad, message in (({"device": "gpu"}, "unknown device"), ({"amp": "fp16"}, "--amp fp16"),
                         ({"deterministic": "yes"}, "deterministic")):
        with pytest.raises(OblivioError, match=message):
            parse_config(base | bad)
