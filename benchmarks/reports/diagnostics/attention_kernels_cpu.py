"""Microbenchmarks behind speed_cpu.md section 5 (session 15), one thread, µs a call (best of 3 × N calls):
the decoder self-attention by ``few_keys_attention`` vs ``scaled_dot_product_attention`` (and a hand-written
matmul → softmax → matmul), cross-attention at key lengths S vs S padded to a multiple of 16, and the RMSNorm
inference path vs ``nn.RMSNorm``. Run from the repository root:

    python benchmarks/reports/diagnostics/attention_kernels_cpu.py > benchmarks/reports/diagnostics/attention_kernels_cpu.md
"""
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from recbole_specgr.model.t5 import RMSNorm, few_keys_attention  # noqa: E402

torch.set_num_threads(1)


def us(f, n=100):
    for _ in range(5):
        f()
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(n):
            f()
        best = min(best, (time.perf_counter() - start) / n * 1e6)
    return best


print("# Attention and RMSNorm kernels on the 2-core CPU, one thread (µs a call)\n")
print("## Decoder self-attention over a few keys\n")
print("| rows × heads, queries, keys | SDPA | matmul → softmax → matmul | few_keys_attention | max abs diff |")
print("|---|---|---|---|---|")
for rows, T, S in [(1350, 2, 4), (4096, 1, 2), (2700, 1, 4)]:  # verification; beam step at depth 1; depth 3
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(rows, 2, n, 32, generator=g) for n in (T, S, S))
    mask = torch.randn(1, 2, T, S, generator=g).masked_fill(
        torch.arange(S)[None, :] > torch.arange(S - T, S)[:, None], float("-inf"))
    sdpa = lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # noqa: E731
    hand = lambda: torch.matmul((torch.matmul(q, k.transpose(-1, -2)) * 32 ** -0.5 + mask).softmax(-1), v)  # noqa
    few = lambda: few_keys_attention(q, (k,), (v,), mask)  # noqa: E731
    print(f"| {rows} × 2, {T}, {S} | {us(sdpa):.0f} | {us(hand):.0f} | {us(few):.0f} | "
          f"{(few() - sdpa()).abs().max().item():.1e} |")

print("\n## Cross-attention: S keys vs S padded (masked) to a multiple of 16, SDPA with a boolean mask\n")
print("| keys S | 100 queries × 27 users | 50 × 32 | 16 × 256 | 1 × 256 |")
print("|---|---|---|---|---|")
for S in (18, 22, 26, 34, 42, 50, 66, 82):
    cells = []
    for users, Q in ((27, 100), (32, 50), (256, 16), (256, 1)):
        times = []
        for keys in (S, (S + 15) // 16 * 16):
            q, k, v = torch.randn(users, 2, Q, 32), torch.randn(users, 2, keys, 32), torch.randn(users, 2, keys, 32)
            mask = torch.ones(users, 1, 1, keys, dtype=torch.bool)
            mask[::2, ..., S - 12:] = False
            mask[..., S:] = False
            times.append(us(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask), n=40))
        cells.append(f"{times[0]:.0f} / {times[1]:.0f}")
    print(f"| {S} | " + " | ".join(cells) + " |")

print("\n## RMSNorm (d = 64), inference (no grad)\n")
print("| rows | nn.RMSNorm | RMSNorm (sum(x·x)/D) | bitwise equal |")
print("|---|---|---|---|")
for rows in (432, 2700, 10752):
    builtin, ours = torch.nn.RMSNorm(64, eps=1e-6), RMSNorm(64, eps=1e-6)
    with torch.no_grad():
        builtin.weight.normal_()
        ours.weight.copy_(builtin.weight)
        x = torch.randn(rows, 64)
        print(f"| {rows} | {us(lambda: builtin(x), 300):.0f} | {us(lambda: ours(x), 300):.0f} | "
              f"{torch.equal(builtin(x), ours(x))} |")
