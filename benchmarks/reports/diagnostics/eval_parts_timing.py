"""Wall-clock time (no profiler) of the parts of the main job's validation grid pass and test pass on a trained
checkpoint, one thread: each listed function is wrapped with a timer (nested calls counted in each, e.g. the decoder
inside verification; a recursive call, as ``TIGER.digit_log_probs`` makes per CPU group, counted again). Session
27's "where the time goes" (speed_cpu.md section 16). Run from the repository root:

    OMP_NUM_THREADS=1 python benchmarks/reports/diagnostics/eval_parts_timing.py saved/SpecGRPP-<date>.pth \\
        > benchmarks/reports/diagnostics/eval_parts_timing.txt
"""
import functools
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_gamma_sweep import main_job_passes  # noqa: E402

from recbole_specgr.inference import drafting, specgr  # noqa: E402
from recbole_specgr.model import t5  # noqa: E402
from recbole_specgr.model.sequential_recommender import tiger  # noqa: E402

spent = {}


def timed(owner, name):
    plain = getattr(owner, name)
    label = f"{owner.__name__.rsplit('.', 1)[-1]}.{name}"

    @functools.wraps(plain)  # callers that read the signature (``digits``) see the method's own
    def call(*args, **kwargs):
        start = time.perf_counter()
        try:
            return plain(*args, **kwargs)
        finally:
            spent[label] = spent.get(label, 0.0) + time.perf_counter() - start

    setattr(owner, name, staticmethod(call) if isinstance(owner.__dict__.get(name), staticmethod) else call)


for owner, names in ((t5.T5, ["_decode", "encode", "reorder_cache"]), (drafting.DraftSession, ["topk"]),
                     (tiger.TIGER, ["digit_log_probs", "_shared_decoding"]), (specgr, ["beam_log_probs"]),
                     (specgr.SpeculativeRecommender, ["_draft_rounds", "_verify", "_decode", "_output", "_rank_joint",
                                                      "_unseen_pool", "_guided"])):
    for name in names:
        timed(owner, name)

_, passes = main_job_passes(sys.argv[1])
for split, run in passes:
    spent.clear()
    start = time.perf_counter()
    run()
    print(f"{split}: {time.perf_counter() - start:.1f} s")
    for label, seconds in sorted(spent.items(), key=lambda item: -item[1]):
        print(f"  {label}: {seconds:.2f} s")
