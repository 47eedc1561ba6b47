import sys, torch, time
sys.path.insert(0, 'benchmarks')
import bench_tiger_train as B
import argparse
args = argparse.Namespace(n_items=1682, n_digits=4, codebook_size=64, history=10, beams=50, batch_size=256, n_batches=2, seed=0,
    hidden_size=None, n_heads=None, d_kv=None, inner_size=None, n_layers_enc=None, n_layers_dec=None, device='cpu')
torch.set_num_threads(1)
ours, hf, _ = B.build_models(args, 'cpu', torch.float32)
data = B.batches(ours, args)
opt = torch.optim.AdamW(ours.parameters(), lr=1e-3); ours.train()
loss_fn = ours.calculate_loss
t0=time.perf_counter()
compiled = torch.compile(loss_fn)
def step(fn):
    loss = fn(data[0][0]); loss.backward(); opt.step(); opt.zero_grad(set_to_none=True); return float(loss)
print('compiled first', step(compiled), time.perf_counter()-t0, flush=True)
for _ in range(2): step(compiled); step(loss_fn)
T={'eager':0,'compiled':0}
for _ in range(6):
    for name, fn in (('eager', loss_fn), ('compiled', compiled)):
        t=time.perf_counter(); step(fn); T[name]+=time.perf_counter()-t
print({k: round(6*256/v) for k,v in T.items()}, 'rows/s')
