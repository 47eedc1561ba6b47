"""Ad-hoc (issue 10, session 7): other keys for unseen items in the joint ranking, on one SpecGR++ checkpoint.
Candidates = drafts of all l rounds (no exit) ∪ complete beams; seen items keyed l·V + α·s_d as in the package;
unseen items keyed α_u·s_d + λ·l·mean(log P(c_1..c_k | x)) + c (k = 1, 2, 3 leading digits; λ = 0, α_u = α is the
package's constant v_u = c / l). For each (α_u, k, λ): the c of best valid R@50 and its test R@50 overall / unseen.

    OMP_NUM_THREADS=1 python benchmarks/reports/diagnostics/joint_ranking_unseen_keys.py saved/SpecGRPP-<seed>.pth 2.0
"""
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from candidates import dump_candidates  # noqa: E402
from recbole_specgr.evaluation import SplitMetrics  # noqa: E402


def unseen_digit_log_probs(rec, seq, seq_len, enc, seen):
    """log P(c_1..c_l | x) of every unseen item, per digit."""
    unseen_ids = torch.nonzero(~seen).squeeze(1)
    unseen_ids = unseen_ids[unseen_ids > 0]
    return {"lp": rec.verifier.digit_log_probs(enc, unseen_ids.expand(seq.size(0), -1)).float()}


checkpoint, alpha = sys.argv[1], float(sys.argv[2])
model, rec, data = dump_candidates(checkpoint, unseen_digit_log_probs)
L = rec.n_digits
for d in data.values():
    d["unseen_ids"] = torch.nonzero(~d["seen"]).squeeze(1)
    d["unseen_ids"] = d["unseen_ids"][d["unseen_ids"] > 0]


def evaluate(d, alpha_u, digits, lam, c):
    base, sd, seen = d["base"], d["sd"], d["seen"]
    keys = torch.where(seen[None, :], L * base + alpha * sd, torch.full_like(base, -math.inf))
    ids = d["unseen_ids"]
    unseen_keys = alpha_u * sd[:, ids] + lam * L * d["lp"][..., :digits].mean(-1) + c
    keys[:, ids] = unseen_keys.masked_fill(base[:, ids] == -math.inf, -math.inf)  # drafted unseen items only
    metrics = SplitMetrics([10, 50], seen)
    top = keys.topk(50, dim=1)
    out = torch.full_like(keys, -math.inf).scatter_(1, top.indices, top.values)
    metrics.add(out, d["targets"])
    result = metrics.result()
    return result["recall@50"], result["unseen/recall@50"]


print(f"{checkpoint}: α = {alpha:g}; test R@50 overall / unseen at the c of best valid R@50")
for alpha_u in (alpha, 2 * alpha):
    for digits, lam in ((1, 0.0), (1, 0.25), (1, 0.5), (2, 0.25), (3, 0.25)):
        rows = [(c / 4, evaluate(data["valid"], alpha_u, digits, lam, c / 4)) for c in range(-120, 1)]
        c, (valid_r, valid_u) = max(rows, key=lambda row: row[1][0])
        test_r, test_u = evaluate(data["test"], alpha_u, digits, lam, c)
        print(f"α_u = {alpha_u:g}, k = {digits}, λ = {lam:g}: c = {c:g}, valid {valid_r:.4f} / {valid_u:.4f}, "
              f"test {test_r:.4f} / {test_u:.4f}", flush=True)
