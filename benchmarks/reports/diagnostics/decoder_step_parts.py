"""Where one decoder step's time goes, at the main job's sizes (ml-100k: d_model 64, 2 + 2 layers, 2 heads of 32,
d_ff 256, V = 67; 81 users × 50 beams = 4,050 rows, two cached positions, 42 encoder positions padded to 48), one
thread, glibc keeping freed memory as the main job does: the whole ``decode_step``, each part of a decoder block
timed inside the block (the parts' sum is the block), and the matmuls' rate against one core's fp32 peak. Session 28's
"the decoder's floor" (speed_cpu.md section 17). Random weights: the time does not depend on them.

    OMP_NUM_THREADS=1 python benchmarks/reports/diagnostics/decoder_step_parts.py \\
        > benchmarks/reports/diagnostics/decoder_step_parts.txt
"""
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from recbole_specgr.allocator import keep_freed_memory  # noqa: E402
from recbole_specgr.model.t5 import T5, T5Config  # noqa: E402

keep_freed_memory()
torch.set_num_threads(1)
torch.manual_seed(0)
torch.set_grad_enabled(False)
D, FF, V, USERS, BEAMS, S = 64, 256, 67, 81, 50, 42
model = T5(T5Config(vocab_size=V, n_layers_enc=2, n_layers_dec=2, d_model=D, n_heads=2, d_kv=32, d_ff=FF,
                    dropout=0.0)).eval()
cache = model.start_cache(torch.randn(USERS, S, D), torch.ones(USERS, S, dtype=torch.bool))
_, cache = model.decode_step(torch.full((USERS,), 1), cache)
cache = model.reorder_cache(cache, torch.arange(USERS).repeat_interleave(BEAMS))
_, cache = model.decode_step(torch.randint(3, V, (USERS * BEAMS,)), cache)  # two cached positions, as at B_3
tokens = torch.randint(3, V, (USERS * BEAMS,))
rows = USERS * BEAMS


def median_ms(run, repeats=40):
    for _ in range(3):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return sorted(times)[repeats // 2] * 1e3


step = median_ms(lambda: model.decode_step(tokens, cache))
print(f"decode_step, {rows} rows: {step:.2f} ms, {step * 1e3 / rows:.2f} us per row")

spent = defaultdict(float)


def timed_block(block, x, self_kv, self_mask, cross_kv, cross_mask):
    """DecoderBlock.forward (keep_kv, grouped rows) with a clock between its parts."""
    marks = [time.perf_counter()]

    def mark(name):
        marks.append(time.perf_counter())
        spent[name] += marks[-1] - marks[-2]

    BG, T, _ = x.shape
    h = block.norm_self(x); mark("RMSNorm (self)")
    k, v = block.self_attn.project_kv(h); mark("self k, v projections")
    k, v = torch.cat((self_kv[0], k), dim=2), torch.cat((self_kv[1], v), dim=2); mark("KV cache concatenation")
    a = block.self_attn(h, k, v, self_mask); mark("self-attention: q, few-keys attention, o")
    x = x + a; mark("residual adds")
    h = block.norm_cross(x).reshape(cross_kv[0].shape[0], BG // cross_kv[0].shape[0] * T, D); mark("RMSNorm (cross)")
    c = block.cross_attn(h, *cross_kv, cross_mask).reshape(BG, T, D); mark("cross-attention: q, SDPA, o")
    x = x + c; mark("residual adds")
    h = block.norm_ff(x); mark("RMSNorm (feed-forward)")
    f = block.ff(h); mark("feed-forward (2 matmuls, ReLU)")
    x = x + f; mark("residual adds")
    return x


x = model.embedding(tokens[:, None])
mask = model.dec_pos(torch.arange(2, 3), torch.arange(3))
block = model.dec_blocks[0]
run = lambda: timed_block(block, x, cache.self_kv[0], mask, cache.cross_kv[0], cache.cross_mask)  # noqa: E731
for _ in range(3):
    run()
spent.clear()
repeats = 40
for _ in range(repeats):
    run()
total = sum(spent.values()) / repeats * 1e3
print(f"one decoder block: {total:.2f} ms (x {len(model.dec_blocks)} blocks, + embedding, final norm and lm_head)")
for name, seconds in sorted(spent.items(), key=lambda item: -item[1]):
    print(f"  {name:42s} {seconds / repeats * 1e3:6.2f} ms  {seconds / repeats * 1e3 / total:5.1%}")

h = block.norm_ff(x)
matmuls = {"feed-forward wi [rows, 64] x [64, 256]": (lambda: block.ff.wi(h), 64 * FF),
           "self q, k, v [rows, 64] x [64, 64] x 3": (lambda: (block.self_attn.q(h), block.self_attn.k(h),
                                                                block.self_attn.v(h)), 3 * 64 * 64)}
for name, (op, macs) in matmuls.items():
    ms = median_ms(op)
    print(f"  {name}: {ms:.2f} ms, {2 * macs * rows / ms / 1e6:.0f} GFLOP/s")
