"""Where TIGER's constrained beam search spends its time on the CPU: users/s, then ``torch.profiler``'s operators by
self time over three searches, at bench_tiger_beam.py's CPU sizes (β = 50, n = 2,000, l = 4, C = 256, w = 20,
d_model 64, 2+2 layers, one thread).

    python benchmarks/reports/diagnostics/profile_beam_search.py --batch_size 256
"""

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import bench_tiger_beam  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes = argparse.Namespace(n_items=2000, n_digits=4, codebook_size=256, history=20, beams=50, seed=0,
                               hidden_size=64, inner_size=256, n_heads=2, d_kv=32, n_layers_enc=2, n_layers_dec=2)
    tiger, _, _ = bench_tiger_beam.build_models(sizes, "cpu", torch.float32)
    item_seq, item_seq_len, _, _ = bench_tiger_beam.make_inputs(tiger, args.batch_size, sizes.history, sizes.n_items,
                                                                "cpu", sizes.seed)

    def search():
        for step in tiger.beam_search(tiger.encode(item_seq, item_seq_len), sizes.beams):
            pass
        return step

    with torch.inference_mode():
        search()
        start, n = time.perf_counter(), 0
        while time.perf_counter() - start < 3:
            search()
            n += 1
        print(f"batch {args.batch_size}: {args.batch_size * n / (time.perf_counter() - start):.1f} users/s")
        with torch.profiler.profile() as prof:
            for _ in range(3):
                search()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
