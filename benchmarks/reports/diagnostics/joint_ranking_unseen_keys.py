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

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_gamma_sweep import load_trained  # noqa: E402
from recbole_specgr.evaluation import SplitMetrics  # noqa: E402
from recbole_specgr.inference.specgr import Thresholds  # noqa: E402
from recbole_specgr.model.speculative import allowed_items  # noqa: E402

checkpoint, alpha = sys.argv[1], float(sys.argv[2])
_, trainer, valid_data, test_data = load_trained(checkpoint, {"show_progress": False})
model = trainer.model
model.eval()
rec = model.speculative_recommender()
rec.no_adaptive_exit = True
L, n = rec.n_digits, rec.n_items
data = {}
with torch.no_grad():
    for split, loader in (("valid", valid_data), ("test", test_data)):
        seen = loader._dataset.seen_item_mask
        unseen_ids = torch.nonzero(~seen).squeeze(1)
        unseen_ids = unseen_ids[unseen_ids > 0]
        parts = {"base": [], "sd": [], "lp": [], "targets": []}
        for inter, *_ in loader:
            inter = trainer.with_exclusions(inter, loader._dataset)
            allowed = allowed_items(inter)
            allowed = None if allowed is None else allowed.bool()
            seq, seq_len = inter[model.ITEM_SEQ], inter[model.ITEM_SEQ_LEN]
            rounds = rec._draft_rounds(seq, seq_len, Thresholds(0.0, 0.0), allowed)
            fill = rec._advance(rounds.beam_steps, rounds.beams, L)
            base = torch.full((seq.size(0), n), -math.inf)  # V of drafts and complete beams, -inf elsewhere
            beam_items = fill.items.masked_fill(~fill.valid, 0)
            beam_v = (fill.scores.float() / fill.depth).masked_fill(~fill.valid, -math.inf)
            if allowed is not None:
                beam_v = beam_v.masked_fill(~(allowed.gather(1, beam_items) if allowed.dim() == 2
                                              else allowed[beam_items]), -math.inf)
            base.scatter_reduce_(1, beam_items, beam_v, reduce="amax")
            base.scatter_reduce_(1, rounds.cand.flatten(1), rounds.cand_scores.flatten(1), reduce="amax")
            base[:, 0] = -math.inf
            enc = rec.verifier.encode(seq, seq_len)
            parts["base"].append(base)
            parts["sd"].append(rec.draft_queries(seq, seq_len, enc) @ rec.draft_index.item_vectors.float().T / model.temperature)
            parts["lp"].append(rec.verifier.digit_log_probs(enc, unseen_ids.expand(seq.size(0), -1)).float())
            parts["targets"].append(inter[trainer.item_field])
        data[split] = {k: torch.cat(v) for k, v in parts.items()} | {"seen": seen, "unseen_ids": unseen_ids}


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
