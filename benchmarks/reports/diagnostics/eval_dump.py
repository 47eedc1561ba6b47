"""The main job's validation grid pass and test pass on a trained checkpoint, one thread, timed, with every validation
row (``trainer.threshold_sweep``) and the test result written as JSON: two trees' dumps compared show whether a change
keeps the results (session 28's A/B runs, speed_cpu.md section 17). Run it with the tree under test first on the path,
from that tree (a git worktree of another revision, its ``cache/`` and ``saved/`` linked to this checkout's):

    OMP_NUM_THREADS=1 PYTHONPATH=$tree python benchmarks/reports/diagnostics/eval_dump.py \\
        saved/SpecGRPP-<date>.pth /tmp/dump.json
"""
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path.cwd()))
sys.path.insert(0, str(Path.cwd() / "benchmarks"))

from bench_gamma_sweep import main_job_passes, timed_passes  # noqa: E402


def plain(value):
    """``value`` as JSON: tensors as lists, anything else unknown by its repr."""
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, torch.Tensor):
        return value.tolist()
    return value if value is None or isinstance(value, (bool, int, float, str)) else repr(value)


trainer, passes = main_job_passes(sys.argv[1])
(_, valid_s), (test, test_s) = timed_passes(passes)
with open(sys.argv[2], "w") as f:
    json.dump({"valid_s": valid_s, "test_s": test_s, "sweep": plain(trainer.threshold_sweep), "test": plain(dict(test))},
              f, indent=0)
print(f"{sys.argv[2]}: valid {valid_s:.1f} s, test {test_s:.1f} s, rows {len(trainer.threshold_sweep)}")
