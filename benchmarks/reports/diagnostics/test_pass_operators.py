"""Session 29 (speed_cpu.md section 18, "for the next session"): torch operators of seven test-pass batches of the
main job's checkpoint at its chosen setting, one thread, by self CPU time and input shape (torch.profiler inflates
small operators; read it for counts and the large ones, e.g. the drafting topk over the catalog).

    python benchmarks/reports/diagnostics/test_pass_operators.py saved/SpecGRPP-<date>.pth \\
        > benchmarks/reports/diagnostics/test_pass_operators.txt
"""
import sys, time
from pathlib import Path
ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT)); sys.path.insert(0, str(ROOT / "benchmarks"))
import torch
from bench_gamma_sweep import load_trained
from recbole_specgr.allocator import keep_freed_memory
torch.set_num_threads(1)
config, trainer, valid_data, test_data = load_trained(sys.argv[1], {"show_progress": False, "state": "ERROR"})
keep_freed_memory()
trainer.tune_threshold(valid_data)  # choose the setting as the main job does
model = trainer.model
batches = []
for i, b in enumerate(test_data):
    if i >= 8: break
    batches.append(trainer.with_exclusions(b[0], test_data._dataset))
model.eval()
with torch.no_grad():
    model.full_sort_predict(batches[0])
    from torch.profiler import profile, ProfilerActivity
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for inter in batches[1:]:
            model.full_sort_predict(inter)
print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=40))
