"""``oblivio audit --population N``: the per-example test against N retrained models (Hayes et al., SaTML 2025).

Statistics on synthetic phis, the memorising original vs a retrained model on digits, the CLI record,
the report section in headless Chromium, and bad input.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from oblivio import OblivioError, RandomSubset, TrainConfig, make_split, retrain, train
from oblivio.audit import LiraConfig, audit
from oblivio.audit.reference_models import MAX_MEMBERS, Population, member_seed, per_example_test
from oblivio.cli import app
from oblivio.parallel import SerialExecutor

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)

# the overfit setting of test_audit.py: 287-sample train pool, half of it forgotten, 200 epochs, no weight decay
OVERFIT = TrainConfig(seed=0, epochs=200, weight_decay=0.0, lr=0.1)
MEMBERS = 5


def invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    if result.exception and not isinstance(result.exception, (SystemExit, OblivioError)):
        raise result.exception
    return result




# --- the statistics, on synthetic phis ------------------------------------------------------------------------

def synthetic(n_members: int, n_forget: int = 200, seed: int = 0) -> tuple[Population, np.ndarray, np.ndarray]:
    """Members' phis ~ N(mu_i, 1) per sample; a fresh draw from the same Gaussians; mu."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(3.0, 2.0, n_forget)
    phi = mu + rng.normal(size=(n_members, n_forget))
    reference = rng.normal(3.0, 2.0, 50) + rng.normal(size=(n_members, 50))
    return Population(phi, reference, 0.0, LiraConfig(), [member_seed(0, m) for m in range(n_members)]), mu, rng.normal(size=n_forget)


def test_honest_draw_is_not_flagged_and_shifted_samples_are():
    population, mu, noise = synthetic(16)
    honest = mu + noise
    shifted = honest.copy()
    shifted[:20] += 6.0  # 20 samples far above what the population reaches
    idx = np.arange(1000, 1200)
    record, curves = per_example_test(population, {"unlearned": shifted, "original": honest}, idx)
    json.dumps(record)
    assert record["flagged"]["original"]["count"] <= 2
    flagged = record["flagged"]["unlearned"]
    assert set(range(20)) <= set(flagged["forget_positions"]) and flagged["count"] <= 22
    assert flagged["train_indices"] == [int(idx[p]) for p in flagged["forget_positions"]]
    assert record["noise_floor_share"] < 0.02 and len(record["noise_floor_shares"]) == 16
    assert curves["z_left_out"].shape == (16, 200) and curves["flagged_unlearned"][:20].all()
    assert abs(record["z"]["retrained_left_out"]["mean"]) < 0.2  # the left-out z is centred like N(0, 1)
    assert record["verdict"].startswith(f"{flagged['count']} of 200 forget samples still look trained-on (original: ")
    # every flagged sample lies above the BH cutoff and every other below it
    z = curves["z_unlearned"]
    assert (z[curves["flagged_unlearned"]] >= flagged["z_threshold"] - 1e-9).all()
    assert (z[~curves["flagged_unlearned"]] < flagged["z_threshold"]).all()


def test_samples_pushed_far_below_every_retrained_model_are_over_forgotten():
    population, mu, noise = synthetic(16)
    pushed = mu + noise
    pushed[:30] -= 8.0  # far less confident than any retrained model: detectable too
    record, _ = per_example_test(population, {"unlearned": pushed, "original": mu + noise}, np.arange(200))
    over = record["flagged"]["unlearned"]["over_forgotten"]
    assert 30 <= over["count"] <= 32 and record["flagged"]["original"]["over_forgotten"]["count"] <= 2
    assert record["flagged"]["unlearned"]["count"] <= 2  # not "still trained-on"
    assert f"{over['count']} look over-forgotten" in record["verdict"]


def test_two_members_give_no_noise_floor():
    population, mu, noise = synthetic(2)
    record, curves = per_example_test(population, {"unlearned": mu + noise}, np.arange(200))
    assert record["noise_floor_share"] is None and "z_left_out" not in curves
    assert "no noise floor with 2 retrained models" in record["verdict"]


def test_held_out_control_catches_a_model_confident_on_everything():
    population, mu, noise = synthetic(8)
    reference_mu = population.phi_reference.mean(0)
    record, _ = per_example_test(population, {"unlearned": mu + noise + 4}, np.arange(200),
                                 {"unlearned": reference_mu + 4})
    held = record["flagged"]["unlearned"]["held_out"]
    assert held["share"] > 0.5 and record["reference_samples"] == 50
    assert "held-out samples are flagged too" in record["verdict"]


# --- digits: a memorising original vs a retrained model --------------------------------------------------------

@pytest.fixture(scope="module")
def overfit(digits):
    split = make_split(digits, RandomSubset(fraction=0.5), seed=0, third_party_fraction=0.8)
    original, _ = train("mlp", split.train, 10, OVERFIT)
    retrained, _ = retrain("mlp", split.retain, 10, TrainConfig(**{**OVERFIT.__dict__, "seed": 1}))
    return split, original, retrained


class Recording(SerialExecutor):
    def __init__(self):
        self.calls = 0

    def map(self, fn, tasks, on_done=None, **kwargs):
        self.calls += len(tasks)
        return super().map(fn, tasks, on_done, **kwargs)


def test_memorising_original_is_flagged_and_a_retrained_model_is_not(overfit):
    """The original saw (and memorised) every forget sample; the retrained model saw none.

    Both are audited as the "unlearned" model against the same 5 retrained models. Measured (CPU):
    original 110 of 144 forget samples flagged (49% of held-out samples), retrained 0, noise floor 0.14%;
    with split and training seeds 1-4 and 4 or 5 members: original 99-114, retrained 0, floor at most 0.9%.
    """
    split, original, retrained = overfit
    config = LiraConfig(train=OVERFIT)
    executor = Recording()
    as_if_unlearned = audit(original, split, population=MEMBERS, lira_config=config, seed=0, executor=executor)
    honest = audit(retrained, split, population=MEMBERS, lira_config=config, seed=0)
    assert executor.calls == MEMBERS  # the members train through the given executor
    a, b = as_if_unlearned.population, honest.population
    n = len(split.forget_idx)
    orig, retr = a["flagged"]["unlearned"], b["flagged"]["unlearned"]
    print(f"\nflagged: original {orig['count']} of {n}, retrained {retr['count']} of {n}; noise floor "
          f"{100 * a['noise_floor_share']:.2f}%; held-out: original {orig['held_out']['share']:.3f}, "
          f"retrained {retr['held_out']['share']:.3f}")
    assert orig["share"] >= 0.5 and retr["share"] <= 0.05 and orig["count"] - retr["count"] >= 0.4 * n
    assert a["noise_floor_share"] <= 0.05 and retr["share"] <= a["noise_floor_share"] + 0.03  # near the floor
    # the original saw twice the retain set, so it is more confident on unseen data too (held-out control ~0.5);
    # its forget samples are flagged well beyond that: memorisation, not only more data
    assert orig["share"] - orig["held_out"]["share"] >= 0.1 and retr["held_out"]["share"] <= 0.05
    assert orig["train_indices"] == split.forget_idx[orig["forget_positions"]].tolist()
    # same seed, same population: identical records but for the wall time
    for d in (a, b):
        d.pop("seconds_per_member")
    assert {k: v for k, v in a.items() if k not in ("flagged", "z", "verdict")} == \
        {k: v for k, v in b.items() if k not in ("flagged", "z", "verdict")}
    assert a["member_seeds"] == [member_seed(0, m) for m in range(MEMBERS)]
    assert a["train_config"]["train"]["epochs"] == 200
    record = json.loads(json.dumps(as_if_unlearned.to_dict()))
    assert record["population"]["flagged"]["unlearned"]["count"] == orig["count"]
    assert "Benjamini-Hochberg" in record["conventions"]["population"]


def test_population_bounds_in_the_api(overfit):
    split, original, _ = overfit
    for bad in (1, MAX_MEMBERS + 1, -3):
        with pytest.raises(OblivioError, match="population must be between 2 and 256"):
            audit(original, split, population=bad)


# --- the command line and the report -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A digits MLP, 10% forgotten by fine-tuning, audited with --population 3 (all via the CLI)."""
    d = tmp_path_factory.mktemp("runs")
    assert invoke("train", "--dataset", "digits", "--epochs", "10", "--no-progress", "--out", d / "model.safetensors").exit_code == 0
    r = invoke("forget", "--checkpoint", d / "model.safetensors", "--out", d / "ft.safetensors", "--scenario", "random",
               "--fraction", "0.1", "--method", "ft", "--set", "epochs=2")
    assert r.exit_code == 0, r.output
    return d


def test_cli_population_writes_the_record(runs, cli):
    code, out, err = cli("audit", "--checkpoint", runs / "ft.safetensors", "--population", "3", "--out", runs / "audit")
    assert code == 0, out + err
    assert "with 3 retrained models" in err  # the progress line
    doc = json.loads((runs / "audit" / "audit.json").read_text())
    pop = doc["population"]
    sidecar = json.loads((runs / "model.json").read_text())
    assert pop["members"] == 3 and pop["train_config"]["train"]["epochs"] == sidecar["extra"]["train_config"]["epochs"]
    assert set(pop["flagged"]) == {"original", "unlearned"} and pop["noise_floor_share"] is not None
    forget = json.loads((runs / "ft.split.json").read_text())["forget_idx"]  # the split written by oblivio forget
    for f in pop["flagged"].values():
        assert f["count"] == len(f["forget_positions"]) == len(f["train_indices"])
        assert f["train_indices"] == [forget[p] for p in f["forget_positions"]]
    text = " ".join(out.split())
    assert f"per-example: {pop['verdict'].split(' (')[0]}" in text
    assert f"{pop['flagged']['unlearned']['count']} of {doc['split']['sizes']['forget']}" in out
    assert max(len(line) for line in out.splitlines()) <= 80  # tables, legend and headline on stdout
    html = (runs / "audit" / "report.html").read_text()
    assert "Per-example test against 3 retrained models" in html and html.count("data:image/png;base64,") == 4


@pytest.mark.parametrize("value", ["1", "100000"])
def test_cli_refuses_a_bad_population(cli, tmp_path, value):
    code, out, err = cli("audit", "--checkpoint", tmp_path / "none.safetensors", "--population", value, "--out", tmp_path / "a")
    out += err
    assert code == 2 and "Traceback" not in out
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert errors == [f"error: --population must be between 2 and 256 retrained models, got {value}"]
    assert not (tmp_path / "a").exists()


def test_cli_ray_needs_shadows_or_population(tmp_path):
    r = invoke("audit", "--checkpoint", tmp_path / "none.safetensors", "--ray")
    assert r.exit_code == 2 and "--population" in r.output and "--lira-shadows" in r.output


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed")
def test_population_section_renders_in_chromium(runs, cli, tmp_path):
    from matplotlib.image import imread

    report = runs / "audit" / "report.html"
    if not report.exists():  # this test run alone
        assert cli("audit", "--checkpoint", runs / "ft.safetensors", "--population", "3", "--out", runs / "audit")[0] == 0
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*flags, "--dump-dom", report.resolve().as_uri()], check=True, capture_output=True, text=True,
                         timeout=120).stdout
    assert "Per-example test against 3 retrained models" in dom and "class=\"popline\"" in dom
    shot = tmp_path / "report.png"
    subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1200,4000", report.resolve().as_uri()],
                   check=True, capture_output=True, timeout=120)
    pixels = (imread(shot)[..., :3] * 255).astype(int)
    assert pixels.shape[:2] == (4000, 1200)
    # the headline box of the section is drawn: its 4 px blue left border (#2563eb), a tall run in the left margin
    blue = np.abs(pixels - np.array([0x25, 0x63, 0xEB])).max(axis=2) < 40
    longest, end = 0, 0
    for col in blue[:, 20:100].T:
        edges = np.flatnonzero(np.diff(np.r_[0, col.astype(int), 0]))
        for start, stop in zip(edges[::2], edges[1::2]):
            if stop - start > longest:
                longest, end = stop - start, stop
    assert longest >= 30, "the per-example headline box is not visible"
    below = pixels[end + 40: end + 900]  # the table and figure under the headline: not blank
    assert len(np.unique(below.reshape(-1, 3), axis=0)) > 200
