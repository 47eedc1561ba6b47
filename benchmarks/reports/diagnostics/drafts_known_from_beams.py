"""How much of verification the verifier's own beam search already computed, at the setting chosen on validation
(issue 13 (1): "a draft whose first digits match a beam prefix reuses that beam's ... log-probs"). With the joint
ranking every user's complete beams B_l are decoded anyway; a beam step j+1 computes log P(next digit | prefix) for
every prefix of B_j, so a seen draft whose (l−1)-digit prefix is a beam of B_{l−1} has all l digit log-probs in the
beam search's tables, and an unseen draft's V is not used by the joint ranking at all (v_u replaces it).

    python benchmarks/reports/diagnostics/drafts_known_from_beams.py saved/SpecGRPP-<date>.pth
"""
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_gamma_sweep import load_trained  # noqa: E402
from recbole_specgr.inference.specgr import SpeculativeRecommender  # noqa: E402

torch.set_num_threads(1)
_, trainer, valid_data, test_data = load_trained(sys.argv[1], {"show_progress": False, "state": "WARNING"})
model = trainer.model
recommender = model.speculative_recommender()
print("setting:", recommender.thresholds)
recorded = []  # the BeamSteps of the batch's beam search (one search per batch, then its ranking)
beam_search = type(model).beam_search


def recording_beam_search(self, *args, **kwargs):
    inner = beam_search(self, *args, **kwargs)
    steps = []
    recorded.append(steps)

    def gen():
        need = None
        while True:
            try:
                step = inner.send(need)
            except StopIteration:
                return
            steps.append(step)
            need = yield step

    return gen()


type(model).beam_search = recording_beam_search
counts = torch.zeros(5, dtype=torch.long)  # drafts: unseen, seen in B_l, seen (l−1)-prefix in B_{l−1}, (l−2) only, none
output = SpeculativeRecommender._output
pi = recommender.prefix_index
l = recommender.n_digits


def counting(self, rounds, setting, allowed, subset_ranking):
    out = output(self, rounds, setting, allowed, subset_ranking)
    steps = {s.depth: s for s in recorded.pop()}
    cand = out.drafts.flatten(1)  # [B, M] the drafts of the rounds this setting ran
    real = cand != 0
    unseen = real & ~rounds.seen[cand]
    seen = real & ~unseen

    def in_beams(depth):
        step = steps[depth]
        nodes = pi.lookup(step.prefixes).masked_fill(~step.valid, -2)  # [B, β]
        mine = pi.item_nodes(depth)[cand]  # [B, M]
        return (mine[:, :, None] == nodes[:, None, :]).any(dim=2)

    full = seen & in_beams(l - 1)
    item = seen & in_beams(l)
    partial = seen & ~full & in_beams(l - 2)
    counts.add_(torch.stack([unseen.sum(), item.sum(), full.sum(), partial.sum(), (seen & ~full & ~partial).sum()]))
    return out


SpeculativeRecommender._output = counting
start = time.perf_counter()
result = trainer.evaluate(test_data, load_best_model=False)
n = int(counts[0] + counts[2] + counts[3] + counts[4])
unseen, item, full, partial, none = counts.tolist()
print(f"test pass {time.perf_counter() - start:.1f} s (with the counting); recall@50 {result['recall@50']:.4f}; "
      f"{n} drafts verified")
print(f"unseen drafts (V unused by a joint ranking): {unseen} ({unseen / n:.1%})")
print(f"seen drafts whose item is a complete beam: {item} ({item / n:.1%})")
print(f"seen drafts whose {l - 1}-digit prefix is a beam of B_{l - 1} (every digit known): {full} ({full / n:.1%})")
print(f"seen drafts whose {l - 2}-digit prefix only is a beam: {partial} ({partial / n:.1%})")
print(f"seen drafts with neither: {none} ({none / n:.1%})")
