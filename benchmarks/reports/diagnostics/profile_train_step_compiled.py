"""Where the compiled TIGER training step (``torch_compile: True``, TIGER.yaml sizes, B = 256, one thread) spends its
time: every matmul shape with its share and GFLOP/s (``torch.profiler``, 5 steps), and the minor page faults and
milliseconds of a step, compiled and eager (10 steps each). Run from the repository root:

    python benchmarks/reports/diagnostics/profile_train_step_compiled.py \
        > benchmarks/reports/diagnostics/profile_train_step_compiled.txt
    MALLOC_MMAP_THRESHOLD_=268435456 MALLOC_TRIM_THRESHOLD_=1073741824 \\
        python benchmarks/reports/diagnostics/profile_train_step_compiled.py --faults_only \\
        > benchmarks/reports/diagnostics/profile_train_step_compiled_malloc.txt

(the second: glibc keeps freed memory instead of returning it to the system, so buffers are not faulted in again.)
"""
import argparse
import os
import resource
import sys
import time

import torch
from torch.profiler import profile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_step_setup import train_step  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--faults_only", action="store_true")
args = parser.parse_args()
ours, step = train_step()
compiled = torch.compile(ours.calculate_loss)
for _ in range(4):
    step(compiled)
malloc = {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")}
print(f"torch {torch.__version__}, one thread, glibc settings from the environment: {malloc or 'none'}")
if not args.faults_only:
    with profile(record_shapes=True) as prof:
        for _ in range(5):
            step(compiled)
    total = sum(e.self_cpu_time_total for e in prof.key_averages()) / 5
    rows = []
    for e in prof.key_averages(group_by_input_shape=True):
        if e.key in ("aten::mm", "aten::bmm"):
            a, b = e.input_shapes[:2]
            flops = 2 * a[0] * a[1] * b[1] if e.key == "aten::mm" else 2 * a[0] * a[1] * a[2] * b[2]
            per_call = e.self_cpu_time_total / e.count
            rows.append((e.self_cpu_time_total / 5, e.key, a, b, e.count // 5, per_call, flops / per_call / 1e3))
    rows.sort(key=lambda r: -r[0])
    print(f"profiled step: {total / 1000:.1f} ms; matmuls {sum(r[0] for r in rows) / total:.0%} of it\n")
    print("| op | A | B | calls/step | ms/step | µs/call | GFLOP/s |\n|---|---|---|---|---|---|---|")
    for t, key, a, b, n, per_call, gflops in rows:
        print(f"| {key} | {a} | {b} | {n} | {t / 1000:.2f} | {per_call:.0f} | {gflops:.0f} |")
    print()
for name, fn in (("compiled", compiled), ("eager", None)):
    for _ in range(2):
        step(fn)
    faults, start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
    for _ in range(10):
        step(fn)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / 10
    print(f"{name}: {faults:.0f} minor page faults a step, {(time.perf_counter() - start) * 100:.1f} ms a step")
