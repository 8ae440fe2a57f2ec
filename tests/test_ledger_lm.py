"""Deletion requests on language models: "forget author X" through the ledger, the worker's processing and the API."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")
torch = pytest.importorskip("torch")

from oblivio.errors import OblivioError  # noqa: E402
from oblivio.ledger import language, workflow  # noqa: E402
from oblivio.lm import data as D  # noqa: E402
from oblivio.lm.models import build_lm, load_lm, save_lm  # noqa: E402
from oblivio.lm.training import TrainConfig, train_lm  # noqa: E402
from test_ledger import checkpoint, database  # noqa: E402,F401 - shared fixtures

TRAIN = TrainConfig(steps=100, lr=1e-2, batch_size=32)
DM = {"epochs": 15}


@pytest.fixture(scope="module")
def lm_checkpoint(tmp_path_factory):
    """A test-size GPT-2 trained on a 16-author corpus, saved as 'oblivio lm train' saves it."""
    torch.set_num_threads(1)
    corpus = D.generate(16, seed=3)
    splits = D.make_splits(corpus, seed=3)
    tok = D.train_tokenizer(corpus)
    model = build_lm("gpt2", "test", tok.vocab_size, seed=3, eos_id=tok.eos_id, pad_id=tok.pad_id)
    train_lm(model, tok, D.with_paraphrases(splits.qa("train")), TRAIN, seed=3)
    path = tmp_path_factory.mktemp("lm-ledger") / "lm.safetensors"
    save_lm(path, model, tok, seed=3, extra={"corpus": D.corpus_spec(corpus), "train": TRAIN.spec(),
                                             "trained_authors": splits.forget + splits.retain,
                                             "heldout_authors": splits.reference + splits.holdout})
    return path, splits


def test_author_requests_are_checked_and_hashed(lm_checkpoint, checkpoint, tmp_path):
    path, splits = lm_checkpoint
    trained, held = splits.retain[0], splits.holdout[0]
    with database("sqlite", tmp_path) as db:
        version = workflow.register_model(path, db=db)
        assert version["arch"] == "gpt2" and version["dataset"]["spec"]["n_authors"] == 16
        req, created = workflow.add_request("lm-1", checkpoint=path, scenario="author", authors=[trained], db=db)
        facts = [qa for qa in splits.corpus.facts if qa.author == trained]
        assert created and req["samples"] == len(facts) == 10
        assert req["sample_hashes"] == [language.fact_hash(qa) for qa in facts]
        for kwargs, message in [
            ({"scenario": "author", "authors": ["Nobody Atall"]}, "unknown author 'Nobody Atall'"),
            ({"scenario": "author", "authors": [held]}, "is held out: the model never trained on them"),
            ({"scenario": "author", "authors": []}, "names the authors to forget"),
            ({"scenario": "author", "authors": [trained, trained]}, "must be distinct"),
            ({"scenario": "author", "authors": ["a\x00b"]}, "control characters"),
            ({"scenario": "author", "authors": [trained], "indices": [1]}, "takes author names, not indices"),
            ({"scenario": "random", "indices": [1]}, "a language model takes author requests"),
        ]:
            with pytest.raises(OblivioError, match=message):
                workflow.add_request("lm-bad", checkpoint=path, db=db, **kwargs)
        with pytest.raises(OblivioError, match="an author request needs a language-model checkpoint"):
            workflow.add_request("clf-bad", checkpoint=checkpoint, scenario="author", authors=[trained], db=db)
        with pytest.raises(OblivioError, match="takes no authors"):
            workflow.add_request("clf-bad", checkpoint=checkpoint, scenario="class", classes=[1], authors=[trained], db=db)
        assert [r["external_ref"] for r in workflow.list_requests(db=db)] == ["lm-1"]


def test_process_forgets_authors_along_the_lineage_and_certifies(lm_checkpoint, tmp_path):
    path, splits = lm_checkpoint
    first, second = splits.retain[0], splits.retain[1]
    with database("sqlite", tmp_path) as db:
        workflow.add_request("lm-1", checkpoint=path, scenario="author", authors=[first], reason="GDPR art. 17", db=db)
        with pytest.raises(OblivioError, match="has no option 'bogus'"):
            workflow.process(path, method="dm", options={"bogus": 1}, db=db)
        run = workflow.process(path, method="dm", options=DM, seed=0, out_dir=tmp_path / "out", db=db)
        assert run["status"] == "closed", run
        out = tmp_path / "out" / f"lm.run-{run['id']}.safetensors"
        _, _, info = load_lm(out)
        assert info["forgotten_authors"] == [first] and info["ledger"]["requests"] == ["lm-1"]
        cert = workflow.certificate("lm-1", db=db, root=tmp_path)
        assert cert["request"]["scenario"] == {"kind": "author", "authors": [first]}
        assert cert["samples"]["hash_recipe"] == language.FACT_HASH_RECIPE and len(cert["samples"]["hashes"]) == 10
        assert cert["model_after"]["weights_changed"] and cert["audit"]["verdict"] == "pass"
        unlearned, original = cert["audit"]["metrics"]["unlearned"], cert["audit"]["metrics"]["original"]
        assert unlearned["forget_loss"] > 2 * original["forget_loss"]  # the author's answers became unfamiliar
        assert unlearned["mia_loss"] < original["mia_loss"]
        audit = json.loads((tmp_path / "out" / f"lm.run-{run['id']}.audit" / "audit.json").read_text())
        assert audit["forgotten_authors"] == [first] and audit["verdict"]["status"] == "pass"
        # a second request, filed against the original, is processed on the newest model: both stay forgotten
        workflow.add_request("lm-2", checkpoint=path, scenario="author", authors=[second], db=db)
        with pytest.raises(OblivioError, match="already unlearned into version"):
            workflow.process(path, method="dm", options=DM, db=db)
        run2 = workflow.process(out, method="dm", options=DM, out_dir=tmp_path / "out", db=db)
        assert run2["status"] in ("closed", "failed"), run2
        _, _, info2 = load_lm(tmp_path / "out" / f"lm.run-{run2['id']}.safetensors")
        assert info2["forgotten_authors"] == sorted([first, second])
        assert workflow.get_request("lm-2", db=db)["run_id"] == run2["id"]


def test_api_files_author_requests(lm_checkpoint, tmp_path):
    from fastapi.testclient import TestClient

    from oblivio.api import create_app

    path, splits = lm_checkpoint
    token = "t" * 8 + "0123456789abcdefghijklmnopqrstuvwxyz"
    with database("sqlite", tmp_path) as db:
        version = workflow.register_model(path, db=db)
        with TestClient(create_app(db=db, token=token)) as client:
            auth = {"Authorization": f"Bearer {token}"}
            ok = {"external_ref": "api-lm-1", "model_version": version["id"], "scenario": "author",
                  "authors": [splits.retain[2]]}
            r = client.post("/requests", json=ok, headers=auth)
            assert r.status_code == 201 and r.json()["samples"] == 10, r.text
            for bad in (ok | {"authors": []}, ok | {"authors": ["x\x01y"]}, ok | {"authors": [" padded"]},
                        ok | {"indices": [1]}, ok | {"scenario": "random"}, ok | {"authors": ["Nobody Atall"]},
                        ok | {"authors": [5]}):
                r = client.post("/requests", json=bad | {"external_ref": "api-lm-bad"}, headers=auth)
                assert r.status_code == 422 and set(r.json()) == {"detail", "errors"}, (bad, r.status_code, r.text)
            schema = client.get("/openapi.json").json()["components"]["schemas"]["RequestIn"]
            assert "author" in schema["properties"]["scenario"]["enum"] and "authors" in schema["properties"]
