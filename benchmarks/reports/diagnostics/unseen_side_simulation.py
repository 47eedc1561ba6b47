"""Offline simulation of the joint ranking's unseen side (session 24): what if every unseen item were a candidate,
and unseen items got η·ρ_u (ρ_u: the user's recent share of items not seen in training)?

Step 1 dumps, for a trained SpecGR model and its chosen setting, the seen items' joint keys (a run at v_u = −1,000:
its list holds seen items only, and their keys do not depend on v_u, β or η) and every unseen item's s_d, s_t, whether
it was drafted, and ρ_u. Step 2 merges those by hand for a grid of (η, v_u, β), with the unseen candidates the drafted
ones or all of them, chooses on valid R@50 and reports test; its first line checks that the dump reproduces the model's
own valid result at its chosen setting.

    OMP_NUM_THREADS=1 python benchmarks/reports/diagnostics/unseen_side_simulation.py dump \
        benchmarks/reports/table_ml-100k_cpu_session22_s2021_SpecGRPP.json /tmp/dump_s2021.pt
    python benchmarks/reports/diagnostics/unseen_side_simulation.py simulate /tmp/dump_s2021.pt
"""
import itertools
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def dump_main(src, out_path):
    from bench_gamma_sweep import load_trained
    from recbole_specgr.inference.specgr import Thresholds
    from recbole_specgr.model.speculative import allowed_items

    d = json.load(open(src))
    config, trainer, valid_data, test_data = load_trained(d['checkpoint'], {"show_progress": False})
    model = trainer.model; model.eval()
    rec = model.speculative_recommender()
    S = model.specgr_setting
    seen = rec.seen_item_mask
    U = torch.nonzero(~seen).squeeze(1); U = U[U != 0]
    dump = {'setting': tuple(S), 'tau': rec.drafter_temperature, 'n_digits': rec.n_digits, 'unseen_items': U}
    for split, data in (('valid', valid_data), ('test', test_data)):
        parts = {k: [] for k in ('seen_items', 'seen_keys', 'sd', 'st', 'drafted', 'allowed', 'pos_row', 'pos_item', 'hist_unseen', 'chosen_hit')}
        row0 = 0
        with torch.no_grad():
            for interaction, history_index, positive_u, positive_i in data:
                interaction = trainer.with_exclusions(interaction, data._dataset)
                positive_i = interaction[trainer.item_field]; positive_u = torch.arange(len(positive_i))
                seq, ln = interaction[model.ITEM_SEQ], interaction[model.ITEM_SEQ_LEN]
                allowed = allowed_items(interaction)
                base = Thresholds(S.seen, S.unseen, S.draft_weight, -1000.0, 0.0)
                o_seen, o_star = list(rec.recommend_thresholds(seq, ln, [base, S], allowed_items=allowed))
                B, n = o_seen.scores.shape
                keys, items = o_seen.scores.topk(50, dim=1)
                parts['seen_items'].append(items); parts['seen_keys'].append(keys)
                enc = rec.verifier.encode(seq, ln)
                sess = rec.draft_index.session(rec.draft_queries(seq, ln, enc))
                UB = U.expand(B, -1)
                parts['sd'].append(sess.item_scores(UB).float() / rec.drafter_temperature)
                parts['st'].append(rec.text_prior.cosines(seq, ln, UB).float() / rec.drafter_temperature)
                drafted = torch.zeros(B, n, dtype=torch.bool); drafted.scatter_(1, o_star.drafts.flatten(1), True)
                parts['drafted'].append(drafted[:, U])
                parts['allowed'].append(allowed[:, U] if allowed is not None else torch.ones(B, len(U), dtype=torch.bool))
                parts['pos_row'].append(positive_u + row0); parts['pos_item'].append(positive_i)
                parts['chosen_hit'].append(torch.isfinite(o_star.scores)[positive_u, positive_i])
                pos = torch.arange(seq.size(1))[None]
                recent = (pos < ln[:, None]) & (pos >= ln[:, None] - 3)
                parts['hist_unseen'].append(((~seen[seq]) & recent & (seq != 0)).sum(1).float() / recent.sum(1).clamp(min=1))
                row0 += B
        dump[split] = {k: torch.cat(v) for k, v in parts.items()}
        h = dump[split]['chosen_hit']; un = ~seen[dump[split]['pos_item']]
        print(split, 'chosen R@50', h.float().mean().item(), 'unseen', h[un].float().mean().item(), 'cases', len(h))
    dump['seen_mask'] = seen
    torch.save(dump, out_path)


def evaluate(sp, alpha, vu, beta, l, eta=0.0, draft_all=False, K=50):
    N, U = sp['sd'].shape
    cand = sp['allowed'] & (True if draft_all else sp['drafted'])
    uk = l * vu + alpha * sp['sd'] + beta * sp['st'] + eta * sp['hist_unseen'][:, None]
    uk = uk.masked_fill(~cand, -float('inf'))
    keys = torch.cat([sp['seen_keys'], uk], 1)
    top = keys.topk(K, dim=1)
    chosen = torch.zeros_like(keys, dtype=torch.bool).scatter_(1, top.indices, torch.isfinite(top.values))
    tgt = sp['pos_item']
    seen_pos = (sp['seen_items'] == tgt[:, None])
    hit_seen = (chosen[:, :50] & seen_pos).any(1)
    hit_un = (chosen[:, 50:] & (sp['U'][None, :] == tgt[:, None])).any(1)
    hit = hit_seen | hit_un
    un = ~sp['seen_mask'][tgt]
    share = chosen[:, 50:].sum(1).float().mean().item()
    return hit.float().mean().item(), hit[~un].float().mean().item(), hit[un].float().mean().item(), share


def simulate_main(paths):
    for path in paths:
        d = torch.load(path)
        g, gu, a, vu0, b0 = d['setting'][:5]; l = d['n_digits']
        for split in ('valid', 'test'):
            d[split]['U'] = d['unseen_items']; d[split]['seen_mask'] = d['seen_mask']
        v, t = d['valid'], d['test']
        ch = evaluate(v, a, vu0, b0, l)
        print(path, 'setting', d['setting'], 'sim valid', ['%.4f' % x for x in ch], 'real', v['chosen_hit'].float().mean().item())
        rows = []
        for draft_all, eta, vu, beta in itertools.product([False, True], [0, 1, 2, 4], [-3, -2.5, -2.25, -2, -1.75, -1.5, -1.25, -1], [0, 1, 2, 3, 4, 6]):
            rows.append(((draft_all, eta, vu, beta), evaluate(v, a, vu, beta, l, eta, draft_all)))
        for draft_all in (False, True):
            for eta_set in ([0], [0, 1, 2, 4]):
                rs = [r for r in rows if r[0][0] == draft_all and r[0][1] in eta_set]
                best = max(rs, key=lambda r: r[1][0])
                te = evaluate(t, a, best[0][2], best[0][3], l, best[0][1], draft_all)
                print(f'  draft_all={draft_all} eta in {eta_set}: best valid {best[0]} valid {best[1][0]:.4f}/{best[1][1]:.4f}/{best[1][2]:.4f} n_u {best[1][3]:.1f} -> test {te[0]:.4f}/{te[1]:.4f}/{te[2]:.4f} n_u {te[3]:.1f}')
                for floor in (0.1875,):
                    rf = [r for r in rs if r[1][2] >= floor]
                    if rf:
                        bf = max(rf, key=lambda r: r[1][0]); te = evaluate(t, a, bf[0][2], bf[0][3], l, bf[0][1], draft_all)
                        print(f'     floor unseen>={floor}: {bf[0]} valid {bf[1][0]:.4f}/{bf[1][1]:.4f}/{bf[1][2]:.4f} -> test {te[0]:.4f}/{te[1]:.4f}/{te[2]:.4f} n_u {te[3]:.1f}')


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "dump" and len(sys.argv) == 4:
        dump_main(sys.argv[2], sys.argv[3])
    elif len(sys.argv) > 2 and sys.argv[1] == "simulate":
        simulate_main(sys.argv[2:])
    else:
        raise SystemExit(__doc__)
