"""Ad-hoc (issue 10, session 8): the text prior in the joint ranking's keys, on one SpecGR++ checkpoint.
Candidates = drafts of all l rounds (no exit) ∪ complete beams, as in joint_ranking_unseen_keys.py; seen items keyed
l·V + α·s_d (+ β_s·s_t in variant "all items"), unseen items α·s_d + β·s_t + l·c (the package's key with v_u = c,
s_t = (cos(item text, mean text of the last 3 items) − c̄) / τ, recbole_specgr.inference.text_prior); "mix" keys unseen
items α·((1 − ρ)·s_d + ρ·s_t) + l·c instead. For each variant: the c of best valid R@50 and test R@50 overall /
unseen there. First: how well each scorer orders unseen items among themselves (R@10 / R@50 of unseen targets, only
unseen items ranked).

    OMP_NUM_THREADS=1 python benchmarks/reports/diagnostics/text_prior_keys.py saved/SpecGRPP-<seed>.pth 2.0
"""
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from candidates import dump_candidates  # noqa: E402
from recbole_specgr.evaluation import SplitMetrics  # noqa: E402


def text_prior_cosines(rec, seq, seq_len, enc, seen):
    """cos(item text, mean text of the last items) − c̄ of every item (s_t before the division by τ)."""
    all_items = torch.arange(rec.n_items)
    return {"st": rec.text_prior.cosines(seq, seq_len, all_items.expand(seq.size(0), -1))}


checkpoint, alpha = sys.argv[1], float(sys.argv[2])
model, rec, data = dump_candidates(checkpoint, text_prior_cosines)
prior = rec.text_prior
L, tau = rec.n_digits, model.temperature
for d in data.values():
    d["st"] = d["st"] / tau


def evaluate(d, beta, beta_seen, rho, c):
    base, sd, st, seen = d["base"], d["sd"], d["st"], d["seen"]
    unseen_key = alpha * ((1 - rho) * sd + rho * st) + beta * st + L * c
    keys = torch.where(seen[None, :], L * base + alpha * sd + beta_seen * st, unseen_key)
    keys = keys.masked_fill(base == -math.inf, -math.inf)  # candidates only
    metrics = SplitMetrics([10, 50], seen)
    metrics.add(keys, d["targets"])
    result = metrics.result()
    return result["recall@50"], result["unseen/recall@50"], result["ndcg@10"]


print(f"{checkpoint}: α = {alpha:g}, text prior centre c̄ = {prior.center:.4f}")
for split in ("valid", "test"):
    d = data[split]
    rows = ~d["seen"][d["targets"]]
    for name, scores in (("drafter s_d", d["sd"]), ("text prior s_t", d["st"])):
        only_unseen = scores[rows].masked_fill(d["seen"][None, :], -math.inf)
        metrics = SplitMetrics([10, 50], torch.zeros_like(d["seen"]))
        metrics.add(only_unseen, d["targets"][rows])
        r = metrics.result()
        print(f"{split}: unseen targets among unseen items by {name}: R@10 {r['recall@10']:.4f}, "
              f"R@50 {r['recall@50']:.4f}")
variants = [("unseen only", b, 0.0, 0.0) for b in (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)]
variants += [("all items", 1.0, 0.5, 0.0), ("all items", 1.0, 1.0, 0.0), ("mix", 0.0, 0.0, 0.25),
             ("mix", 0.0, 0.0, 0.5)]
for name, beta, beta_seen, rho in variants:
    rows = [(c / 8, evaluate(data["valid"], beta, beta_seen, rho, c / 8)) for c in range(-80, 1)]
    c, (valid_r, valid_u, _) = max(rows, key=lambda row: row[1][0])
    test_r, test_u, test_n = evaluate(data["test"], beta, beta_seen, rho, c)
    print(f"{name}: β = {beta:g}, β_s = {beta_seen:g}, ρ = {rho:g}: c = {c:g}, valid {valid_r:.4f} / {valid_u:.4f}, "
          f"test {test_r:.4f} / {test_u:.4f}, N@10 {test_n:.4f}", flush=True)
