"""Ad-hoc (issue 10): reserve m of the K = 50 slots for the user's first unseen drafts in draft order (within a
round drafts are in the drafter's score order, and every round-0 draft outscores every later one), taking the slots
of the lowest-scored seen items of SpecGR++'s output at (γ, γ_u = γ); post hoc on the outputs, valid and test.

    OMP_NUM_THREADS=1 python benchmarks/reports/diagnostics/unseen_reserved_slots.py saved/SpecGRPP-<seed 2020>.pth
"""
import sys, math, torch
from pathlib import Path
ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT)); sys.path.insert(0, str(ROOT / 'benchmarks'))
from bench_gamma_sweep import load_trained
from recbole_specgr.evaluation import SplitMetrics
from recbole_specgr.inference.specgr import Thresholds
ckpt = sys.argv[1]
config, trainer, valid_data, test_data = load_trained(ckpt, {"show_progress": False})
model = trainer.model; model.eval()
gammas = [-2.0, -3.0, -4.0, -5.0]
ms = [0, 2, 3, 5, 8, 10, 15]
K = 50
for split, data in (("valid", valid_data), ("test", test_data)):
    seen = data._dataset.seen_item_mask
    met = {(g, m): SplitMetrics(trainer.topk, seen) for g in gammas for m in ms}
    for inter, *_ in data:
        inter = trainer.with_exclusions(inter, data._dataset)
        targets = inter[trainer.item_field]
        outs = model.recommend_thresholds(inter, [Thresholds(g, g) for g in gammas])
        for g, out in zip(gammas, outs):
            B = out.scores.size(0)
            cand = out.drafts.flatten(1); V = out.draft_scores.flatten(1)
            # all drafts (rounds that ran at this γ), first unseen ones in draft order
            for m in ms:
                sc = out.scores.clone()
                if m > 0:
                    inlist = torch.isfinite(sc)
                    unseen_c = (cand != 0) & ~seen[cand]
                    for b in range(B):
                        u = cand[b][unseen_c[b]]
                        u = u[~inlist[b, u]][:]
                        n_in_unseen = int((inlist[b] & ~seen).sum())
                        r = min(max(0, m - n_in_unseen), u.numel())
                        if r == 0: continue
                        lst = torch.nonzero(inlist[b] & seen).squeeze(1)
                        drop = lst[torch.argsort(sc[b, lst])[:r]]
                        lowest = sc[b, inlist[b]].min()
                        sc[b, drop] = -math.inf
                        add = u[:r]
                        sc[b, add] = lowest - 1 - torch.arange(r, dtype=sc.dtype) * 1e-3  # at the bottom, drafter order
                met[(g, m)].add(sc, targets)
    for (g, m), mt in met.items():
        r = mt.result()
        print(f"{split} g={g} m={m:2d} R@50 {r['recall@50']:.4f} in {r['in_sample/recall@50']:.4f} un {r['unseen/recall@50']:.4f} N@10 {r['ndcg@10']:.4f}", flush=True)
