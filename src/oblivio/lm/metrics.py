"""How well a causal LM forgot, as TOFU (Maini et al. 2024) and MUSE (Shi et al. 2024, arXiv 2407.06460) measure it.

- **Truth ratio** R = P(perturbed | q)^(1/|a|) / P(paraphrased | q)^(1/|a|) per question, the perturbed term the
  geometric mean over the perturbed answers (TOFU's code averages their length-normalised losses, so do we):
  R = exp(L_para - mean L_pert). A model that knows the fact has R << 1; one that never saw it R ~ 1.
- **Forget quality**: p-value of the two-sample KS test between R on the forget set under the unlearned
  model and under the retain (gold) model; 1 is ideal, TOFU calls < 0.05 a failure.
- **Model utility**: harmonic mean of answer probability, ROUGE-L recall of the greedy answer and
  max(0, 1 - R), each on the retain set and on world facts (TOFU also uses real authors; we have none).
  On world facts the probability is normalised over the true and perturbed answers, as TOFU does there.
- **Verbatim memorisation**: ROUGE-L recall of greedy answers against the forget set's answers.
- **MIA AUC** (MUSE's privacy leakage, Shi et al. 2024's min-k % prob, Carlini et al. 2021's zlib): how well
  loss, zlib-normalised loss and min-k % token probability tell forget authors (members of the original
  training set) from holdout authors (never trained on). The retrained model's value is the target (~0.5).
- **Fluency**: the n-gram entropy of greedy answers to the forget questions (ROME, Meng et al. 2022: the
  weighted mean of bi- and tri-gram entropies in bits, weights 2/3 and 4/3), averaged over answers. Unlearning
  that drives an LM to repeat itself or answer nothing scores near 0; the retrained model's value is the target.

ROUGE-L is a small implementation (longest common subsequence over lower-cased words, no stemming; TOFU uses
``rouge_score`` with the Porter stemmer, so values on inflected words can differ slightly).
"""
from __future__ import annotations

import re
import zlib

import numpy as np
import torch
from scipy.stats import hmean, ks_2samp
from sklearn.metrics import roc_auc_score

from .data import QA, LMTokenizer, prompt
from .training import IGNORE, answer_losses, encode, encode_answers, token_logprobs


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def rouge_l_recall(prediction: str, reference: str) -> float:
    """ROUGE-L recall: LCS length over the reference's length, on lower-cased words."""
    p, r = _words(prediction), _words(reference)
    if not r:
        return 0.0
    prev = [0] * (len(p) + 1)
    for rw in r:
        cur = [0] * (len(p) + 1)
        for j, pw in enumerate(p, 1):
            cur[j] = prev[j - 1] + 1 if rw == pw else max(prev[j], cur[j - 1])
        prev = cur
    return prev[-1] / len(r)


@torch.no_grad()
def greedy_answers(model, tokenizer: LMTokenizer, questions: list[str], max_new_tokens: int = 24,
                   chunk: int = 128) -> list[str]:
    """Greedy answers (batched, left-padded, explicit position ids), cut at eos."""
    from .models import n_positions

    model.eval()
    dev = next(model.parameters()).device
    limit = n_positions(model)
    out: list[str] = []
    for i in range(0, len(questions), chunk):
        enc = [tokenizer.encode(prompt(q)) for q in questions[i : i + chunk]]
        t = max(len(e) for e in enc)
        ids = torch.full((len(enc), t), tokenizer.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for k, e in enumerate(enc):
            ids[k, t - len(e):] = torch.tensor(e)
            mask[k, t - len(e):] = 1
        ids, mask = ids.to(dev), mask.to(dev)
        done = torch.zeros(len(enc), dtype=torch.bool, device=dev)
        new = []
        for _ in range(min(max_new_tokens, limit - t)):
            pos = (mask.cumsum(1) - 1).clamp(min=0)
            nxt = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -1].argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, tokenizer.pad_id), nxt)
            new.append(nxt)
            done |= nxt == tokenizer.eos_id
            ids = torch.cat([ids, nxt[:, None]], 1)
            mask = torch.cat([mask, (~done | (nxt == tokenizer.eos_id)).long()[:, None]], 1)
            if bool(done.all()):
                break
        gen = torch.stack(new, 1).cpu() if new else torch.zeros((len(enc), 0), dtype=torch.long)
        for row in gen.tolist():
            if tokenizer.eos_id in row:
                row = row[: row.index(tokenizer.eos_id)]
            out.append(tokenizer.decode([r for r in row if r != tokenizer.pad_id]).strip())
    return out


def truth_ratios(model, tokenizer: LMTokenizer, qas: list[QA]) -> np.ndarray:
    """Per question, R = exp(L_paraphrased - mean L_perturbed) (length-normalised losses); see the module."""
    from .models import n_positions

    if not qas:
        return np.zeros(0)
    n = n_positions(model)
    para = answer_losses(model, encode_answers(tokenizer, qas, n, "paraphrased")).numpy()
    k = len(qas[0].perturbed)
    pert = answer_losses(model, encode(tokenizer, [(qa.question, p) for qa in qas for p in qa.perturbed], n))
    return np.exp(para - pert.numpy().reshape(len(qas), k).mean(1))


def forget_quality(r_unlearned: np.ndarray, r_retain: np.ndarray) -> float:
    """TOFU's forget quality: the KS-test p-value between the two truth-ratio samples."""
    return float(ks_2samp(r_unlearned, r_retain).pvalue)


def ngram_entropy(text: str, ns: tuple[int, ...] = (2, 3), weights: tuple[float, ...] = (2 / 3, 4 / 3)) -> float:
    """ROME's generation entropy of one text: mean over n of weight_n x the entropy (bits) of its word n-grams."""
    words = _words(text)
    out = []
    for n, w in zip(ns, weights):
        grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
        if not grams:
            out.append(0.0)
            continue
        _, counts = np.unique(np.array([" ".join(g) for g in grams]), return_counts=True)
        p = counts / counts.sum()
        out.append(w * float(-(p * np.log2(p)).sum()))
    return float(np.mean(out))


def _rouge(model, tokenizer, qas: list[QA], answers: list[str] | None = None) -> np.ndarray:
    if answers is None:
        answers = greedy_answers(model, tokenizer, [qa.question for qa in qas])
    return np.array([rouge_l_recall(a, qa.answer) for a, qa in zip(answers, qas)])


def model_utility(model, tokenizer: LMTokenizer, retain: list[QA], world: list[QA]) -> dict[str, float]:
    """TOFU's model utility over retain and world facts (see the module docstring) and its six parts."""
    from .models import n_positions

    n = n_positions(model)
    parts: dict[str, float] = {}
    for name, qas in (("retain", retain), ("world", world)):
        loss = answer_losses(model, encode_answers(tokenizer, qas, n)).numpy()
        if name == "world":  # normalised over the options, as TOFU does for real authors and world facts
            pert = answer_losses(model, encode(tokenizer, [(q.question, p) for q in qas for p in q.perturbed], n))
            pert = pert.numpy().reshape(len(qas), -1)
            p_true = np.exp(-loss)
            prob = p_true / (p_true + np.exp(-pert).sum(1))
        else:
            prob = np.exp(-loss)
        parts[f"{name}_prob"] = float(prob.mean())
        parts[f"{name}_rouge"] = float(_rouge(model, tokenizer, qas).mean())
        parts[f"{name}_truth"] = float(np.maximum(0.0, 1.0 - truth_ratios(model, tokenizer, qas)).mean())
    vals = list(parts.values())
    parts["utility"] = 0.0 if min(vals) <= 0 else float(hmean(vals))
    return parts


@torch.no_grad()
def mia_scores(model, tokenizer: LMTokenizer, qas: list[QA], k: float = 0.2) -> dict[str, np.ndarray]:
    """Per sample, membership scores (higher = more likely trained on): -loss, -zlib-normalised loss (summed
    NLL over the answer's zlib-compressed length), and min-k % prob (mean of the lowest ``k`` token
    log-probs), all on the answer given the question."""
    from .models import n_positions

    model.eval()
    batch = encode_answers(tokenizer, qas, n_positions(model))
    dev = next(model.parameters()).device
    lp, mask = token_logprobs(model, batch.to(dev))
    lp, mask = lp.cpu(), mask.cpu()
    n_tok = mask.sum(1).clamp(min=1)
    nll = -lp.sum(1)
    zl = torch.tensor([len(zlib.compress(qa.answer.encode())) for qa in qas], dtype=torch.float)
    mink = []
    for row, m in zip(lp, mask):
        vals = row[m].sort().values
        mink.append(float(vals[: max(1, int(round(k * len(vals))))].mean()) if len(vals) else 0.0)
    return {"loss": (-nll / n_tok).numpy(), "zlib": (-nll / zl).numpy(), "min_k": np.array(mink)}


def mia_auc(model, tokenizer: LMTokenizer, members: list[QA], nonmembers: list[QA]) -> dict[str, float]:
    """ROC AUC of each membership score separating ``members`` (label 1) from ``nonmembers``."""
    a, b = mia_scores(model, tokenizer, members), mia_scores(model, tokenizer, nonmembers)
    y = np.r_[np.ones(len(members)), np.zeros(len(nonmembers))]
    return {f"mia_{k}": float(roc_auc_score(y, np.r_[a[k], b[k]])) for k in a}


def evaluate(model, tokenizer: LMTokenizer, splits, r_retain_forget: np.ndarray | None = None,
             retain_sample: int = 200, seed: int = 0) -> dict:
    """Every metric of ``model`` on ``splits``: forget truth ratios (and forget quality against
    ``r_retain_forget``, the gold model's), utility on (a seeded sample of) retain + world, forget ROUGE-L and
    fluency (of the same greedy answers), MIA AUCs forget vs holdout, and the mean forget / holdout answer losses."""
    from .models import n_positions

    forget, holdout = splits.qa("forget"), splits.qa("holdout")
    retain = splits.qa("retain")
    if len(retain) > retain_sample:
        idx = np.sort(np.random.default_rng(seed).choice(len(retain), retain_sample, replace=False))
        retain = [retain[i] for i in idx]
    r_forget = truth_ratios(model, tokenizer, forget)
    out: dict = {"truth_ratio_forget": r_forget}
    if r_retain_forget is not None:
        out["forget_quality"] = forget_quality(r_forget, r_retain_forget)
    out |= model_utility(model, tokenizer, retain, splits.qa("world"))
    answers = greedy_answers(model, tokenizer, [qa.question for qa in forget])
    out["forget_rouge"] = float(_rouge(model, tokenizer, forget, answers).mean())
    out["fluency"] = float(np.mean([ngram_entropy(a) for a in answers])) if answers else 0.0
    out |= mia_auc(model, tokenizer, forget, holdout)
    n = n_positions(model)
    out["forget_loss"] = float(answer_losses(model, encode_answers(tokenizer, forget, n)).mean())
    out["holdout_loss"] = float(answer_losses(model, encode_answers(tokenizer, holdout, n)).mean())
    return out


__all__ = ["rouge_l_recall", "ngram_entropy", "greedy_answers", "truth_ratios", "forget_quality", "model_utility", "mia_scores",
           "mia_auc", "evaluate", "IGNORE"]
