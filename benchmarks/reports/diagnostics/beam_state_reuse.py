"""Session 27's dropped experiment (speed_cpu.md section 16): verification continuing the beam search's kept decoder
states. ``beam_state_reuse.patch`` (against ``f38dbee``) lets the search keep the states after the beams of B_{l−2}
and feeds a seen draft whose first l − 1 digits the complete beams decoded its digit l − 1 there (one decoder
position instead of two). This times the main job's test pass (the checkpoint's chosen setting, one thread) with the
code of two folders, alternating, and counts the drafts that took the new path:

    git worktree add --detach /tmp/plain f38dbee && git worktree add --detach /tmp/reuse f38dbee
    (cd /tmp/reuse && git apply <repo>/benchmarks/reports/diagnostics/beam_state_reuse.patch)
    OMP_NUM_THREADS=1 python benchmarks/reports/diagnostics/beam_state_reuse.py saved/SpecGRPP-<date>.pth \\
        /tmp/plain /tmp/reuse > benchmarks/reports/diagnostics/beam_state_reuse.txt
"""
import json
import subprocess
import sys
import time
from pathlib import Path

def child(checkpoint: str, root: str) -> dict:
    """The test pass with the code of folder ``root``; seconds in the new path and in draft decoding."""
    import torch

    sys.path[:0] = [root, str(Path(root) / "benchmarks")]  # its benchmarks put its own package first
    from bench_gamma_sweep import load_trained
    from recbole_specgr.allocator import keep_freed_memory
    from recbole_specgr.inference import specgr

    counts = {"continued_drafts": 0, "continued_s": 0.0, "decode_s": 0.0}
    recommender = specgr.SpeculativeRecommender
    if hasattr(recommender, "_decode_last_digit"):
        last_digit = recommender._decode_last_digit

        def counted(self, items, todo, *args):
            counts["continued_drafts"] += int(todo.sum())
            start = time.perf_counter()
            last_digit(self, items, todo, *args)
            counts["continued_s"] += time.perf_counter() - start

        recommender._decode_last_digit = counted
    decode = recommender._decode

    def timed(self, *args, **kwargs):
        start = time.perf_counter()
        decode(self, *args, **kwargs)
        counts["decode_s"] += time.perf_counter() - start

    recommender._decode = timed
    torch.set_num_threads(1)
    config, trainer, _, test_data = load_trained(checkpoint, {"show_progress": False, "state": "ERROR"})
    if config["keep_freed_memory"]:
        keep_freed_memory()
    start = time.perf_counter()
    result = trainer.evaluate(test_data, load_best_model=False)
    return {"test_s": time.perf_counter() - start, "recall@50": result["recall@50"], **counts}


if __name__ == "__main__":
    if sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], sys.argv[3])))
        sys.exit()
    checkpoint, roots = sys.argv[1], sys.argv[2:]
    for repeat in range(2):
        for root in roots:
            out = subprocess.run([sys.executable, __file__, "--child", checkpoint, root], capture_output=True,
                                 text=True, check=True).stdout.strip().splitlines()[-1]
            row = json.loads(out)
            print(f"repeat {repeat} {root}: test pass {row['test_s']:.1f} s, R@50 {row['recall@50']:.6f}, drafts "
                  f"continued {row['continued_drafts']:,} in {row['continued_s']:.2f} s, teacher-forced decoding "
                  f"{row['decode_s']:.2f} s", flush=True)
