"""Where are the unseen targets lost in the joint ranking? The share of them among the drafts at all (before
``specgr_rank_all_unseen``, the only unseen items the list could hold), the share listed, and their rank among all
allowed unseen items by s_d + r·s_t (the order the joint key gives a user's unseen items, r = β/α).

    OMP_NUM_THREADS=1 python benchmarks/reports/diagnostics/unseen_candidates.py \
        benchmarks/reports/table_ml-100k_cpu_session22_s2021_SpecGRPP.json valid
"""
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_gamma_sweep import load_trained
from recbole_specgr.model.speculative import allowed_items
src = sys.argv[1]; split = sys.argv[2] if len(sys.argv) > 2 else 'valid'
d = json.load(open(src))
config, trainer, valid_data, test_data = load_trained(d['checkpoint'], {"show_progress": False})
data = valid_data if split == 'valid' else test_data
model = trainer.model; model.eval()
rec = model.speculative_recommender()
setting = model.specgr_setting
print('setting', setting, 'tau', rec.drafter_temperature)
seen = rec.seen_item_mask
ratios = [0, 0.5, 1, 1.5, 2, 3, 5, 8, 1e6]
ks = [5, 10, 20, 30, 50]
hits = {r: {k: 0 for k in ks} for r in ratios}
n_unseen_t = 0; in_drafts = 0; in_list = 0; n_unseen_listed = 0; n_users = 0
with torch.no_grad():
    for batch in data:
        interaction = trainer.with_exclusions(batch[0], data._dataset)
        positive_i = interaction[trainer.item_field]
        positive_u = torch.arange(len(positive_i))
        seq, ln = interaction[model.ITEM_SEQ], interaction[model.ITEM_SEQ_LEN]
        allowed = allowed_items(interaction)
        out = next(iter(rec.recommend_thresholds(seq, ln, [setting], allowed_items=allowed)))
        B, n = out.scores.shape
        enc = rec.verifier.encode(seq, ln)
        sess = rec.draft_index.session(rec.draft_queries(seq, ln, enc))
        all_items = torch.arange(n).expand(B, n)
        s_d = sess.item_scores(all_items).float() / rec.drafter_temperature
        s_t = rec.text_prior.cosines(seq, ln, all_items).float() / rec.drafter_temperature
        ok = (~seen)[None, :].expand(B, n).clone(); ok[:, 0] = False
        if allowed is not None: ok &= allowed
        drafted = torch.zeros(B, n, dtype=torch.bool); drafted.scatter_(1, out.drafts.flatten(1), True)
        listed = torch.isfinite(out.scores)
        n_unseen_listed += int((listed & ~seen[None, :]).sum()); n_users += B
        un = ~seen[positive_i]
        u_, i_ = positive_u[un], positive_i[un]
        n_unseen_t += len(i_)
        in_drafts += int(drafted[u_, i_].sum()); in_list += int(listed[u_, i_].sum())
        for r in ratios:
            key = (s_d + r * s_t) if r < 1e5 else s_t
            key = key.masked_fill(~ok, -1e9)
            tgt = key[u_, i_]
            rank = (key[u_] > tgt[:, None]).sum(1)
            for k in ks: hits[r][k] += int((rank < k).sum())
print(f'unseen targets {n_unseen_t}; in drafts {in_drafts/n_unseen_t:.4f}; in list (=unseen R@50) {in_list/n_unseen_t:.4f}; unseen items per list {n_unseen_listed/n_users:.1f}')
for r in ratios:
    print('r=%-6s' % ('text' if r >= 1e5 else r), ' '.join(f'top{k}-of-unseen {hits[r][k]/n_unseen_t:.4f}' for k in ks))
