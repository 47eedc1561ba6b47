"""Session 29 (speed_cpu.md section 18, "for the next session"): decoder self-attention scores over a few cached keys
by batched matmul (what few_keys_attention does) against an elementwise multiply-and-sum, at the main job's decoder
sizes (4,050 rows × 2 heads, d_kv 32), one thread: time, and whether the numbers are bitwise equal.

    python benchmarks/reports/diagnostics/few_keys_scores.py > benchmarks/reports/diagnostics/few_keys_scores.txt
"""
import time

import torch
torch.set_num_threads(1)
torch.manual_seed(0)
def t(f, n=50):
    f(); f(); best = 1e9
    for _ in range(5):
        s = time.perf_counter()
        for _ in range(n): f()
        best = min(best, (time.perf_counter() - s) / n * 1e3)
    return best
N, H, d = 4050, 2, 32
for S in (2, 3, 4):
    q = torch.randn(N, H, 1, d); k = torch.randn(N, H, S, d)
    a = torch.matmul(q, k.transpose(-1, -2))
    b = (q * k).sum(-1, keepdim=True).transpose(-1, -2)
    c = torch.einsum("nhqd,nhsd->nhqs", q, k)
    print(S, "matmul %.3f ms" % t(lambda: torch.matmul(q, k.transpose(-1, -2))), "mul-sum %.3f ms" % t(lambda: (q * k).sum(-1)),
          "equal", torch.equal(a, b), "max diff", (a - b).abs().max().item(), "einsum eq", torch.equal(a, c))
