"""Tokenizer statistics behind the unseen gap: how many unseen items share their first j semantic digits with an
item seen in training (the verifier never generated the others' prefixes).

    python benchmarks/reports/diagnostics/prefix_sharing.py saved/SpecGRPP-<seed 2020>.pth
"""
import sys, torch
sys.path.insert(0, 'benchmarks')
from bench_gamma_sweep import load_trained
config, trainer, valid_data, test_data = load_trained(sys.argv[1], {})
model = trainer.model
verifier, drafter, seen = model.speculative_parts()
codes = verifier.item2codes[1:]
seen = seen[1:].bool()
real = (codes >= 0).all(1)
for j in (1, 2, 3):
    pref = [tuple(c[:j].tolist()) for c in codes]
    seen_pref = {p for p, s, r in zip(pref, seen.tolist(), real.tolist()) if s and r}
    un = [p for p, s, r in zip(pref, seen.tolist(), real.tolist()) if (not s) and r]
    shared = sum(p in seen_pref for p in un)
    print(f"digits 1..{j}: {shared}/{len(un)} unseen items ({shared/len(un):.2f}) share their prefix with a seen item; "
          f"{len(set(pref))} distinct prefixes, {len(set(un))} held by unseen items")
