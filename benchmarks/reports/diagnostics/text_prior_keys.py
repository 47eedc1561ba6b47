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
prior = rec.text_prior
L, n, tau = rec.n_digits, rec.n_items, model.temperature
all_items = torch.arange(n)
data = {}
with torch.no_grad():
    for split, loader in (("valid", valid_data), ("test", test_data)):
        parts = {"base": [], "sd": [], "st": [], "targets": []}
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
            parts["sd"].append(rec.draft_queries(seq, seq_len, enc) @ rec.draft_index.item_vectors.float().T / tau)
            parts["st"].append(prior.cosines(seq, seq_len, all_items.expand(seq.size(0), -1)) / tau)
            parts["targets"].append(inter[trainer.item_field])
        data[split] = {k: torch.cat(v) for k, v in parts.items()} | {"seen": loader._dataset.seen_item_mask}


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
