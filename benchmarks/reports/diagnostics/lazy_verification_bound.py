"""How much verification the joint ranking could skip exactly (issue 13, session 21): a seen draft that the complete
beams do not fully hold is decoded today; its key l·V + α·s_d is at most S_k + α·s_d (S_k: the log-probs of the k
digits the beams hold, the rest ≤ 0), so it cannot enter a user's top-K when that bound is at or below the K-th best
key among the candidates known without decoding (complete beams, fully held accepted seen drafts, unseen drafts).
The adaptive exit also reads the drafts' acceptance: after round 0 it cannot fire while a user has fewer than K seen
drafts; after round 1 it needs undecoded V when the certain accepts fall short of K but would reach K with them.

    python benchmarks/reports/diagnostics/lazy_verification_bound.py saved/SpecGRPP-<date>.pth \
        > benchmarks/reports/diagnostics/lazy_verification_bound.txt
"""
import math
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_gamma_sweep import load_trained  # noqa: E402
from recbole_specgr.inference.specgr import SpeculativeRecommender, beam_nodes  # noqa: E402

torch.set_num_threads(1)
_, trainer, valid_data, test_data = load_trained(sys.argv[1], {"show_progress": False, "state": "WARNING"})
model = trainer.model
rec = model.speculative_recommender()
trainer.tune_threshold(valid_data)  # the setting validation chooses, as the main job
print("setting:", rec.thresholds)
recorded = []  # each batch's complete beam search
beam_search = type(model).beam_search


def recording_beam_search(self, *args, **kwargs):
    steps = list(beam_search(self, *args, **kwargs))
    recorded.append(steps)
    return iter(steps)


type(model).beam_search = recording_beam_search
pi, l = rec.prefix_index, rec.n_digits
counts = dict(seen_held=0, seen_not_held=0, below_final_kth=0, below_certain_kth=0, users=0, round0_short_of_k=0,
              exit_after_round1_needs_v=0, its_fewest_decodes=0)
output = SpeculativeRecommender._output


def counting(self, rounds, setting, allowed, subset_ranking):
    out = output(self, rounds, setting, allowed, subset_ranking)
    steps = recorded.pop()
    cand, seen = out.drafts, rounds.seen  # [B, R, δ], [n]
    n_users, flat = cand.size(0), out.drafts.flatten(1)  # [B, M]
    codes = rec.verifier.item2codes[flat].clamp(min=0)
    held, bound = flat != 0, torch.zeros(flat.shape)  # digits along the beams' prefix chain, their summed log-probs
    for depth, step in enumerate(steps):
        n_parents, n_codes = step.log_probs.shape[1:]
        parent = torch.zeros_like(flat)
        if depth > 0:
            match = (pi.item_nodes(depth)[flat].unsqueeze(2) == beam_nodes(pi, steps[depth - 1]).unsqueeze(1))
            held = held & match.any(dim=2)
            parent = match.long().argmax(dim=2)
        digit = step.log_probs.reshape(n_users, -1).gather(1, parent * n_codes + codes[..., depth])
        bound += torch.where(held, digit, torch.zeros_like(digit))
    logits, V = rounds.cand_logits.flatten(1), out.draft_scores.flatten(1)
    used, alpha = flat != 0, setting.draft_weight
    seen_draft = used & seen[flat]
    not_held = seen_draft & ~held
    key_bound = bound + alpha * logits  # ≥ l·V + α·s_d
    listed = out.scores > -math.inf
    final_kth = out.scores.masked_fill(~listed, math.inf).min(dim=1).values
    final_kth = torch.where(listed.sum(dim=1) >= self.topk, final_kth, torch.full_like(final_kth, -math.inf))
    last = steps[-1]  # the K-th best key among candidates known without decoding
    beam_items = last.items.masked_fill(~last.valid, 0)
    beam_keys = (last.scores.float() + alpha * rounds.beam_logits).masked_fill(beam_items == 0, -math.inf)
    text = rounds.cand_text.flatten(1) if rounds.cand_text is not None else torch.zeros_like(logits)
    unseen_draft = used & ~seen[flat]
    draft_keys = torch.where(unseen_draft, l * setting.unseen_score + alpha * logits + setting.text_weight * text,
                             l * V + alpha * logits)
    draft_keys = draft_keys.masked_fill(~(unseen_draft | (seen_draft & held & (V > setting.seen))), -math.inf)
    best = torch.full((n_users, self.n_items), -math.inf)
    best.scatter_reduce_(1, beam_items, beam_keys, reduce="amax")
    best.scatter_reduce_(1, flat, draft_keys, reduce="amax")
    best[:, 0] = -math.inf
    certain_kth = best.topk(self.topk, dim=1).values[:, -1]
    counts["seen_held"] += int((seen_draft & held).sum())
    counts["seen_not_held"] += int(not_held.sum())
    counts["below_final_kth"] += int((not_held & (key_bound <= final_kth[:, None])).sum())
    counts["below_certain_kth"] += int((not_held & (key_bound <= certain_kth[:, None])).sum())
    counts["users"] += n_users
    round0 = (cand[:, 0] != 0) & seen[cand[:, 0]]
    counts["round0_short_of_k"] += int((round0.sum(dim=1) < self.topk).sum())
    if cand.size(1) > 1:
        first_two = torch.zeros_like(used)
        first_two[:, : 2 * cand.size(2)] = True
        certain = (first_two & seen_draft & held & (V > setting.seen)).sum(dim=1)
        maybe = (first_two & not_held & (bound > l * setting.seen)).sum(dim=1)
        needs = ((cand[:, 1] != 0).any(dim=1) & (certain < self.topk) & (certain + maybe >= self.topk))
        counts["exit_after_round1_needs_v"] += int(needs.sum())
        counts["its_fewest_decodes"] += int((self.topk - certain)[needs].sum())
    return out


SpeculativeRecommender._output = counting
result = trainer.evaluate(test_data, load_best_model=False)
c = counts
print(f"test pass: recall@50 {result['recall@50']:.4f}, {c['users']} users")
print(f"seen drafts the beams hold fully: {c['seen_held']}; not fully (decoded today): {c['seen_not_held']}")
print(f"  of these, key bound <= the K-th key among candidates known without decoding (skippable exactly): "
      f"{c['below_certain_kth']} ({c['below_certain_kth'] / c['seen_not_held']:.1%})")
print(f"  key bound <= the final K-th key (an optimistic ceiling): {c['below_final_kth']} "
      f"({c['below_final_kth'] / c['seen_not_held']:.1%})")
print(f"users short of K seen drafts after round 0 (exit cannot fire, no V needed): {c['round0_short_of_k']}")
print(f"users whose exit after round 1 needs undecoded V: {c['exit_after_round1_needs_v']} "
      f"({c['exit_after_round1_needs_v'] / c['users']:.1%}), at least {c['its_fewest_decodes']} decodes")
