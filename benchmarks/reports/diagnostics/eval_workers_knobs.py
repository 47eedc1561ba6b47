"""Session 29 (speed_cpu.md section 18): the main job's two evaluation passes at two torch threads (two evaluation
workers by default) with another decoder call size (``CPU_MAX_ROWS``) or evaluation batch size. One configuration
per process; the output (``eval_workers_knobs.txt``) lists the runs in the order they ran.

    python benchmarks/reports/diagnostics/eval_workers_knobs.py saved/SpecGRPP-<date>.pth <max rows> <batch size>
"""
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402

import recbole_specgr.inference.beam_search as beam_search  # noqa: E402
from bench_gamma_sweep import load_trained  # noqa: E402
from recbole_specgr.allocator import keep_freed_memory  # noqa: E402

rows, batch_size = int(sys.argv[2]), int(sys.argv[3])
beam_search.CPU_MAX_ROWS = rows  # read at each call (user_groups)
torch.set_num_threads(2)
config, trainer, valid_data, test_data = load_trained(sys.argv[1], {"show_progress": False, "state": "ERROR",
                                                                    "eval_batch_size": batch_size})
keep_freed_memory()
start = time.perf_counter()
trainer.tune_threshold(valid_data)
valid_s = time.perf_counter() - start
start = time.perf_counter()
result = trainer.evaluate(test_data, load_best_model=False)
test_s = time.perf_counter() - start
print(f"rows {rows} ebs {batch_size}: valid {valid_s:.1f} test {test_s:.1f} total {valid_s + test_s:.1f} "
      f"R@50 {result['recall@50']:.4f} gamma {trainer.model.specgr_threshold}", flush=True)
