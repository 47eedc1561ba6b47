"""TIGER.digit_log_probs (50 candidates × 4 digits, 256 users) users/s by users per call, and the largest difference
to one call, bench_tiger_beam.py's CPU sizes, one thread, 5 alternating repeats (speed_cpu.md section 4).

    python benchmarks/reports/diagnostics/scoring_group_sizes.py
"""
import sys
from pathlib import Path
ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT)); sys.path.insert(0, str(ROOT / "benchmarks"))
import argparse, time
import torch
import bench_tiger_beam
from recbole_specgr.inference import beam_search

beam_search.CPU_MAX_ROWS = 10 ** 9  # the groups below are the only ones
torch.set_num_threads(1)
sizes = argparse.Namespace(n_items=2000, n_digits=4, codebook_size=256, history=20, beams=50, seed=0,
                           hidden_size=64, inner_size=256, n_heads=2, d_kv=32, n_layers_enc=2, n_layers_dec=2)
tiger, _, _ = bench_tiger_beam.build_models(sizes, "cpu", torch.float32)
B, N = 256, 50
seq, ln, _, _ = bench_tiger_beam.make_inputs(tiger, B, sizes.history, sizes.n_items, "cpu", 0)
cand = torch.randint(1, 2001, (B, N), generator=torch.Generator().manual_seed(1))
with torch.inference_mode():
    enc = tiger.encode(seq, ln)
    from recbole_specgr.inference.interfaces import EncoderState
    def run(g):
        return torch.cat([tiger.digit_log_probs(EncoderState(enc.hidden[s:s+g], enc.mask[s:s+g]), cand[s:s+g]) for s in range(0, B, g)])
    ref = run(256)
    for g in (8, 16, 32, 64):
        print(g, "max diff", (run(g) - ref).abs().max().item())
    res = {g: [] for g in (8, 16, 32, 64, 256)}
    for rep in range(5):
        for g in res:
            t = time.perf_counter(); run(g); res[g].append(B / (time.perf_counter() - t))
    for g, v in res.items(): print("group", g, "median users/s %.0f" % sorted(v)[2], [round(x) for x in v])
