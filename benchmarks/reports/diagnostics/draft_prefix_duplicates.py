"""How many distinct (d1, d2) and (d1, d2, d3) prefixes the δ drafts of one user hold in each verification call of the
main job's test pass: what decoding each shared second-level prefix once (issue 13 (1), "drafts sharing a prefix
decode it once", beyond the first digit that ``TIGER.share_decoding`` already shares) could save (speed_cpu.md §8).

    python benchmarks/reports/diagnostics/draft_prefix_duplicates.py saved/SpecGRPP-<date>.pth
"""
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_gamma_sweep import load_trained  # noqa: E402
from recbole_specgr.model.sequential_recommender.tiger import TIGER  # noqa: E402

torch.set_num_threads(1)
_, trainer, valid_data, test_data = load_trained(sys.argv[1], {"show_progress": False, "state": "WARNING"})
trainer.tune_threshold(valid_data)  # the setting chosen on validation, as the main job
counts = []  # (drafts, distinct 2-digit prefixes, distinct 3-digit prefixes) per user and call
digit_log_probs = TIGER.digit_log_probs


def counting(self, enc, cand_items):
    codes = self.item2codes[cand_items]  # [B, N, l]
    for user_codes, real in zip(codes, cand_items != 0):
        c = user_codes[real]
        counts.append((len(c), len(torch.unique(c[:, :2], dim=0)), len(torch.unique(c[:, :3], dim=0))))
    return digit_log_probs(self, enc, cand_items)


TIGER.digit_log_probs = counting
start = time.perf_counter()
trainer.evaluate(test_data, load_best_model=False)
c = torch.tensor(counts, dtype=torch.float)
print(f"test pass {time.perf_counter() - start:.1f} s (counting included); {len(c)} user-calls, drafts per call "
      f"{c[:, 0].mean():.1f}; distinct 2-digit prefixes mean {c[:, 1].mean():.1f}, quantiles 0.1/0.5/0.9/max "
      f"{torch.quantile(c[:, 1], torch.tensor([0.1, 0.5, 0.9, 1.0])).tolist()}; distinct 3-digit prefixes mean "
      f"{c[:, 2].mean():.1f}")
