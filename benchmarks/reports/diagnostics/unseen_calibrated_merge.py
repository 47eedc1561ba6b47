"""Ad-hoc (issue 10): no thresholds and no exit: rank the drafts of all l rounds together with the complete beams
B_l by V + b·[unseen] (for a seen item V equals its length-normalised beam score), top 50, for several offsets b;
valid and test. Tests whether V, shifted by a constant, ranks unseen items usefully against seen ones.

    OMP_NUM_THREADS=1 python benchmarks/reports/diagnostics/unseen_calibrated_merge.py saved/SpecGRPP-<seed 2020>.pth
"""
import sys, math, torch
from pathlib import Path
ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT)); sys.path.insert(0, str(ROOT / 'benchmarks'))
from bench_gamma_sweep import load_trained
from recbole_specgr.evaluation import SplitMetrics
from recbole_specgr.inference.specgr import Thresholds
from recbole_specgr.model.speculative import allowed_items
ckpt = sys.argv[1]
config, trainer, valid_data, test_data = load_trained(ckpt, {"show_progress": False})
model = trainer.model; model.eval()
rec = model.speculative_recommender(); rec.no_adaptive_exit = True
bs = [0.0, 1.0, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0]
n = rec.n_items
for split, data in (("valid", valid_data), ("test", test_data)):
    seen = data._dataset.seen_item_mask
    met = {b: SplitMetrics(trainer.topk, seen) for b in bs}
    with torch.no_grad():
      for inter, *_ in data:
        inter = trainer.with_exclusions(inter, data._dataset)
        targets = inter[trainer.item_field]
        allowed = allowed_items(inter)
        allowed = None if allowed is None else allowed.bool()
        r = rec._draft_rounds(inter[model.ITEM_SEQ], inter[model.ITEM_SEQ_LEN], Thresholds(0.0, 0.0), allowed)
        fill = rec._advance(r.beam_steps, r.beams, rec.n_digits)
        B = r.cand.size(0)
        base = torch.full((B, n), -math.inf)
        fi = fill.items.masked_fill(~fill.valid, 0)
        fs = (fill.scores.float() / fill.depth).masked_fill(~fill.valid, -math.inf)
        if allowed is not None:
            ok = allowed[fi] if allowed.dim() == 1 else allowed.gather(1, fi)
            fs = fs.masked_fill(~ok, -math.inf)
        base.scatter_reduce_(1, fi, fs, reduce="amax")
        c = r.cand.flatten(1); v = r.cand_scores.flatten(1)
        base.scatter_reduce_(1, c, v, reduce="amax")
        base[:, 0] = -math.inf
        for b in bs:
            sc = base + b * (~seen).float()[None, :]
            top = sc.topk(50, dim=1)
            out = torch.full_like(sc, -math.inf); out.scatter_(1, top.indices, top.values)
            met[b].add(out, targets)
    for b, mt in met.items():
        x = mt.result()
        print(f"{split} b={b} R@50 {x['recall@50']:.4f} in {x['in_sample/recall@50']:.4f} un {x['unseen/recall@50']:.4f} N@10 {x['ndcg@10']:.4f}", flush=True)
