"""Time of the text prior's cosines in the main job's test pass, gathered per draft or as one matrix product over the
batch's distinct unseen drafts (``TextPrior.cosines``, session 21): the two ways alternate in one process, the
test pass's lists are checked equal. ``DISTINCT_ITEMS_PER_COLUMN = 0`` forces the gather.

    python benchmarks/reports/diagnostics/text_prior_cosines_timing.py saved/SpecGRPP-<date>.pth 3 \
        > benchmarks/reports/diagnostics/text_prior_cosines_timing.txt
"""
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_gamma_sweep import load_trained  # noqa: E402
from recbole_specgr.allocator import keep_freed_memory  # noqa: E402
from recbole_specgr.inference import text_prior  # noqa: E402

keep_freed_memory()  # as the quick start
torch.set_num_threads(1)
_, trainer, valid_data, test_data = load_trained(sys.argv[1], {"show_progress": False, "state": "WARNING"})
trainer.tune_threshold(valid_data)  # the setting validation chooses, as the main job
print("setting:", trainer.model.speculative_recommender().thresholds)
spent = [0.0]
cosines = text_prior.TextPrior.cosines


def timed(self, *args):
    start = time.perf_counter()
    out = cosines(self, *args)
    spent[0] += time.perf_counter() - start
    return out


text_prior.TextPrior.cosines = timed
ways = {"gathered": 0, "one product": text_prior.DISTINCT_ITEMS_PER_COLUMN}
results = {name: [] for name in ways}
for repeat in range(int(sys.argv[2])):
    for name in (list(ways) if repeat % 2 == 0 else list(ways)[::-1]):
        text_prior.DISTINCT_ITEMS_PER_COLUMN = ways[name]
        spent[0], start = 0.0, time.perf_counter()
        result = trainer.evaluate(test_data, load_best_model=False)
        results[name].append((spent[0], time.perf_counter() - start, result["recall@50"]))
        print(f"repeat {repeat} {name}: cosines {spent[0]:.2f} s of a {results[name][-1][1]:.1f} s test pass, "
              f"recall@50 {result['recall@50']:.6f}", flush=True)
for name, rows in results.items():
    print(f"{name}: cosines {min(r[0] for r in rows):.2f}–{max(r[0] for r in rows):.2f} s a test pass")
