"""Control for the novelty prior: a score-based baseline (UniSRec) with the same prior, η·ρ_u added to every unseen
item's score (η in units of the row's score std, ρ_u the share of the last 3 history items not seen in training), η
chosen on valid R@50, then test. Is SpecGR++'s gain from the prior alone?

    OMP_NUM_THREADS=1 python benchmarks/reports/diagnostics/novelty_prior_on_unisrec.py \
        benchmarks/reports/table_ml-100k_cpu_session22_s2020_UniSRec.json   # (the checkpoint must be on this machine)
"""
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_gamma_sweep import load_trained
from recbole_specgr.inference.specgr import recent_unseen_share
d = json.load(open(sys.argv[1]))
config, trainer, valid_data, test_data = load_trained(d['checkpoint'], {"show_progress": False})
model = trainer.model.eval()
etas = [0, 0.25, 0.5, 1, 1.5, 2, 3, 4, 6, 8, 12, 16, 1e4]
def run(data):
    seen = data._dataset.seen_item_mask
    hits = {e: [] for e in etas}; un_all = []; stds = []
    with torch.no_grad():
        for interaction, *_ in data:
            interaction = trainer.with_exclusions(interaction, data._dataset)
            scores = model.full_sort_predict(interaction).view(len(interaction), -1).float()
            scores[:, 0] = -torch.inf
            scores[interaction['excluded_items']] = -torch.inf
            fin = torch.isfinite(scores)
            std = torch.stack([scores[r][fin[r]].std() for r in range(len(scores))])
            stds.append(std)
            rho = recent_unseen_share(interaction[model.ITEM_SEQ], interaction[model.ITEM_SEQ_LEN], seen, 3)
            tgt = interaction[trainer.item_field]
            un_all.append(~seen[tgt])
            for e in etas:
                s = scores + (e * std * rho)[:, None] * (~seen)[None, :].float()
                top = s.topk(50, dim=1).indices
                hits[e].append((top == tgt[:, None]).any(1))
    un = torch.cat(un_all)
    return {e: (torch.cat(h).float().mean().item(), torch.cat(h)[un].float().mean().item(), torch.cat(h)[~un].float().mean().item()) for e, h in hits.items()}
v, t = run(valid_data), run(test_data)
best = max(etas, key=lambda e: v[e][0])
print(sys.argv[1], 'eta(std units) chosen', best)
for e in etas:
    print(f'  eta {e}: valid {v[e][0]:.4f}/{v[e][1]:.4f}  test overall {t[e][0]:.4f} unseen {t[e][1]:.4f} in {t[e][2]:.4f}' + ('  <- chosen' if e == best else ''))
