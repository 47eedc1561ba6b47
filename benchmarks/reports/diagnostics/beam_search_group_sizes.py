"""Beam search users/s by users per group (CPU_MAX_ROWS = group × β), bench_tiger_beam.py's CPU sizes, one thread, 5
alternating repeats (speed_cpu.md section 4).

    python benchmarks/reports/diagnostics/beam_search_group_sizes.py
"""
import sys
from pathlib import Path
ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT)); sys.path.insert(0, str(ROOT / "benchmarks"))
import argparse, time
import torch
import bench_tiger_beam
from recbole_specgr.inference import beam_search as bs
torch.set_num_threads(1)
sizes = argparse.Namespace(n_items=2000, n_digits=4, codebook_size=256, history=20, beams=50, seed=0,
                           hidden_size=64, inner_size=256, n_heads=2, d_kv=32, n_layers_enc=2, n_layers_dec=2)
tiger, _, _ = bench_tiger_beam.build_models(sizes, "cpu", torch.float32)
for B in (32, 256):
    seq, ln, _, _ = bench_tiger_beam.make_inputs(tiger, B, sizes.history, sizes.n_items, "cpu", 0)
    def run():
        for step in tiger.beam_search(tiger.encode(seq, ln), 50):
            pass
    res = {g: [] for g in (8, 16, 32, 64, 256)}
    with torch.inference_mode():
        run()
        for rep in range(5):
            for g in res:
                bs.CPU_MAX_ROWS = g * 50
                t = time.perf_counter(); run(); res[g].append(B / (time.perf_counter() - t))
    for g, v in res.items():
        print(B, "group", g, "median users/s %.0f" % sorted(v)[2], [round(x) for x in v])
