"""The test pass at two evaluation workers against one thread, and the caller's serial share of it, on the session-29
main-job checkpoint (argument 1): after the validation grid pass (which sets the chosen setting), the test pass twice
at two threads (two workers), the eval data loader iterated alone (and with the history exclusions), the test pass
at one thread, and each batch's ``full_sort_predict`` timed alone at one thread (speed_cpu.md section 19).

    python benchmarks/reports/diagnostics/test_pass_workers.py saved/SpecGRPP-Dec-07-2026_12-45-21-1927.pth \
        > benchmarks/reports/diagnostics/test_pass_workers.txt
"""
import sys, time
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
import torch
from bench_gamma_sweep import load_trained
from recbole_specgr.allocator import keep_freed_memory
torch.set_num_threads(2)
config, trainer, valid_data, test_data = load_trained(sys.argv[1], {"show_progress": False, "state": "ERROR"})
keep_freed_memory()
t = time.perf_counter(); trainer.tune_threshold(valid_data); print("valid pass", time.perf_counter() - t, flush=True)
for i in range(2):
    t = time.perf_counter(); r = trainer.evaluate(test_data, load_best_model=False); print("test pass 2 workers", time.perf_counter() - t, r["recall@50"], flush=True)
t = time.perf_counter(); n = sum(1 for _ in test_data); print("iterate test_data", time.perf_counter() - t, n, "batches", flush=True)
ds = test_data._dataset
t = time.perf_counter()
for b in test_data: trainer.with_exclusions(b[0], ds)
print("iterate + exclusions", time.perf_counter() - t, flush=True)
torch.set_num_threads(1)
t = time.perf_counter(); r = trainer.evaluate(test_data, load_best_model=False); print("test pass 1 thread", time.perf_counter() - t, r["recall@50"], flush=True)
torch.set_num_threads(2)
# per-batch predict times at 1 thread to see imbalance
torch.set_num_threads(1)
times = []
trainer.model.eval()
with torch.no_grad():
    for b in test_data:
        inter = trainer.with_exclusions(b[0], ds)
        t = time.perf_counter(); trainer.model.full_sort_predict(inter); times.append(time.perf_counter() - t)
print("per-batch predict s: sum %.2f max %.2f first %.2f last %.2f n %d" % (sum(times), max(times), times[0], times[-1], len(times)))
print(" ".join("%.2f" % x for x in times))
