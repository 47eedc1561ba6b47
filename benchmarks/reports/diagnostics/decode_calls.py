"""The decoder calls of the main job's validation grid pass and test pass on a trained checkpoint, one thread: per kind
of call (``T5._decode`` of verification's uneven rows, or of the beam search's grouped rows by how many positions are
cached), the calls, the decoder positions they decode, the time, and µs per position; plus ``digit_log_probs``
(per real draft) and ``_verify`` (per draft slot) around them. Session 28 (speed_cpu.md section 17). Run from the
repository root:

    OMP_NUM_THREADS=1 python benchmarks/reports/diagnostics/decode_calls.py saved/SpecGRPP-<date>.pth \\
        > benchmarks/reports/diagnostics/decode_calls.txt
"""
import functools
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_gamma_sweep import main_job_passes  # noqa: E402

from recbole_specgr.inference import specgr  # noqa: E402
from recbole_specgr.model import t5  # noqa: E402
from recbole_specgr.model.sequential_recommender import tiger  # noqa: E402

stats = {}


def counted(owner, name, label):
    """Wrap ``owner.name``: ``label(*args, **kwargs)`` gives the call's kind and how many units it decodes."""
    plain = getattr(owner, name)

    @functools.wraps(plain)  # callers that read the signature (``digits``) see the method's own
    def call(*args, **kwargs):
        start = time.perf_counter()
        out = plain(*args, **kwargs)
        kind, units = label(*args, **kwargs)
        entry = stats.setdefault(kind, [0, 0, 0.0])
        entry[0] += 1
        entry[1] += units
        entry[2] += time.perf_counter() - start
        return out

    setattr(owner, name, call)


def decoder_kind(self, tokens, cache, keep_kv=True, layout=None):
    kind = "uneven rows (verification)" if layout is not None else f"grouped rows, {cache.length} cached"
    return f"T5._decode, {kind}, T = {tokens.shape[1]}", tokens.numel()


counted(t5.T5, "_decode", decoder_kind)
counted(tiger.TIGER, "digit_log_probs",
        lambda self, enc, cand, digits=None: (f"TIGER.digit_log_probs (every level), digits {digits}",
                                              int((cand != 0).sum())))
counted(specgr.SpeculativeRecommender, "_verify", lambda self, enc, items, *a, **k: ("_verify", items.numel()))

_, passes = main_job_passes(sys.argv[1])
for split, run in passes:
    stats.clear()
    start = time.perf_counter()
    run()
    print(f"{split}: {time.perf_counter() - start:.1f} s")
    for kind, (calls, units, seconds) in sorted(stats.items(), key=lambda item: -item[1][2]):
        print(f"  {kind:62s} calls {calls:5d}  units {units:8d}  {seconds:6.2f} s  "
              f"{seconds / max(units, 1) * 1e6:6.2f} us/unit")
