"""How many of the seen drafts that verification decodes could skip decoding exactly at the test pass's one γ
(speed_cpu.md section 17): the log-probs of the digits the complete beams hold bound V from above (the other digits'
are ≤ 0), so a draft whose bound is ≤ γ is rejected whatever its other digits. Run from the repository root, one
thread:

    OMP_NUM_THREADS=1 python benchmarks/reports/diagnostics/rejection_bound.py saved/SpecGRPP-<date>.pth \\
        > benchmarks/reports/diagnostics/rejection_bound.txt
"""
import sys, torch, math
from pathlib import Path
ROOT = Path.cwd(); sys.path.insert(0, str(ROOT)); sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_gamma_sweep import main_job_passes
from recbole_specgr.inference import specgr
trainer, ((_, validate), (_, evaluate_test)) = main_job_passes(sys.argv[1])
validate()
rec = trainer.model.speculative_recommender()
print("setting", rec.thresholds)
gamma = rec.thresholds.seen
counts = [0, 0, 0, 0]
plain = specgr.beam_log_probs
def blp(prefix_index, item2codes, beams, items):
    table, known = plain(prefix_index, item2codes, beams, items)
    l = table.shape[-1]
    real = items != 0
    seen = rec.seen_item_mask[items]
    need = real & seen & (known < l)
    partial = torch.where(torch.arange(l) < known[..., None], table, torch.zeros_like(table))
    bound = partial.mean(-1)
    counts[0] += int(need.sum()); counts[1] += int((need & (bound <= gamma)).sum())
    counts[2] += int((need & (known == 3)).sum()); counts[3] += int((need & (known == 3) & (bound <= gamma)).sum())
    return table, known
specgr.beam_log_probs = blp
evaluate_test()
print(f"test: seen drafts not fully known {counts[0]}, of them bound <= gamma {counts[1]} ({counts[1]/counts[0]:.1%}); with 3 digits known {counts[2]}, bound <= gamma {counts[3]}")
