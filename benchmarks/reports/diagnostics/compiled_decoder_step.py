"""One decoder step of 4,050 rows at the main job's sizes (the setup of decoder_step_parts.py), eager and then with
every ``DecoderBlock.forward`` compiled by ``torch.compile`` (argument ``static`` or ``dyn``: ``dynamic=True``), one
thread; median ms of 30 calls each, and the first compiled call's time (speed_cpu.md section 19).

    for mode in static dyn; do OMP_NUM_THREADS=1 python benchmarks/reports/diagnostics/compiled_decoder_step.py $mode; \
        done > benchmarks/reports/diagnostics/compiled_decoder_step.txt
"""
import sys, time
import torch
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[3]))
from recbole_specgr.allocator import keep_freed_memory
from recbole_specgr.model.t5 import T5, T5Config
keep_freed_memory()
torch.set_num_threads(1)
torch.manual_seed(0)
torch.set_grad_enabled(False)
D, FF, V, USERS, BEAMS, S = 64, 256, 67, 81, 50, 42
model = T5(T5Config(vocab_size=V, n_layers_enc=2, n_layers_dec=2, d_model=D, n_heads=2, d_kv=32, d_ff=FF, dropout=0.0)).eval()
cache = model.start_cache(torch.randn(USERS, S, D), torch.ones(USERS, S, dtype=torch.bool))
_, cache = model.decode_step(torch.full((USERS,), 1), cache)
cache = model.reorder_cache(cache, torch.arange(USERS).repeat_interleave(BEAMS))
_, cache = model.decode_step(torch.randint(3, V, (USERS * BEAMS,)), cache)
tokens = torch.randint(3, V, (USERS * BEAMS,))
def median_ms(run, repeats=30):
    for _ in range(3): run()
    ts = []
    for _ in range(repeats):
        s = time.perf_counter(); run(); ts.append(time.perf_counter() - s)
    return sorted(ts)[repeats // 2] * 1e3
eager = median_ms(lambda: model.decode_step(tokens, cache))
print(sys.argv[1], "eager ms", eager)
dyn = sys.argv[1] == "dyn"
for b in model.dec_blocks:
    b.forward = torch.compile(b.forward, dynamic=dyn)
t0 = time.perf_counter(); out = model.decode_step(tokens, cache); print("compile s", time.perf_counter() - t0)
comp = median_ms(lambda: model.decode_step(tokens, cache))
print("compiled blocks", comp, "ratio", eager / comp)
