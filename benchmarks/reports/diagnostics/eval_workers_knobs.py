"""Session 29 (speed_cpu.md section 18): the main job's two evaluation passes at two torch threads (two evaluation
workers by default) with another decoder call size (``CPU_MAX_ROWS``) or evaluation batch size. One configuration
per process; the output (``eval_workers_knobs.txt``) lists the runs in the order they ran.

    python benchmarks/reports/diagnostics/eval_workers_knobs.py saved/SpecGRPP-<date>.pth <max rows> <batch size>
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import recbole_specgr.inference.beam_search as beam_search  # noqa: E402
from bench_gamma_sweep import main_job_passes, timed_passes  # noqa: E402

rows, batch_size = int(sys.argv[2]), int(sys.argv[3])
beam_search.CPU_MAX_ROWS = rows  # read at each call (user_groups)
trainer, passes = main_job_passes(sys.argv[1], 2, {"eval_batch_size": batch_size})
(_, valid_s), (result, test_s) = timed_passes(passes)
print(f"rows {rows} ebs {batch_size}: valid {valid_s:.1f} test {test_s:.1f} total {valid_s + test_s:.1f} "
      f"R@50 {result['recall@50']:.4f} gamma {trainer.model.specgr_threshold}", flush=True)
