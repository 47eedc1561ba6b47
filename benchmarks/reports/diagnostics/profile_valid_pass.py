"""cProfile of the main job's validation pass (``tune_threshold``: drafting, verification and beams once, then the
ranking of every setting of the grid) on a trained checkpoint, one thread; first the share of the per-setting
ranking (``SpecGR._output``) in the pass (speed_cpu.md sections 14 and 15). Run from the repository root:

    OMP_NUM_THREADS=1 python benchmarks/reports/diagnostics/profile_valid_pass.py saved/SpecGRPP-<date>.pth \\
        > benchmarks/reports/diagnostics/profile_valid_pass.txt
"""
import cProfile
import io
import pstats
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_gamma_sweep import load_trained  # noqa: E402

from recbole_specgr.allocator import keep_freed_memory  # noqa: E402

torch.set_num_threads(1)
config, trainer, valid_data, _ = load_trained(sys.argv[1], {"show_progress": False, "state": "ERROR"})
if config["keep_freed_memory"]:
    keep_freed_memory()  # as the main job does
profiler = cProfile.Profile()
start = time.perf_counter()
profiler.enable()
trainer.tune_threshold(valid_data)
profiler.disable()
total = time.perf_counter() - start
stats = pstats.Stats(profiler, stream=io.StringIO())
by_name = {f"{Path(file).name}:{name}": row for (file, _, name), row in stats.stats.items()}
n_settings = len(trainer.threshold_grid)
for part, key in (("per-setting ranking (SpecGR._output)", "specgr.py:_output"),
                  ("  of it, the joint ranking (SpecGR._rank_joint)", "specgr.py:_rank_joint"),
                  ("drafting, verification, beams (SpecGR._draft_rounds)", "specgr.py:_draft_rounds")):
    calls, _, _, cumulative, _ = by_name[key]
    print(f"{part}: {cumulative:.1f} s of {total:.1f} s ({cumulative / total:.0%}), {calls} calls")
print(f"grid: {n_settings} settings; {len(valid_data.dataset)} valid rows (a joint grid decodes the complete beams "
      f"in _draft_rounds)\n")
stats.stream = sys.stdout
stats.sort_stats("cumulative").print_stats(40)
