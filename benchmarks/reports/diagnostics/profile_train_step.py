import sys, torch
sys.argv = ['x', '--threads', '1']
sys.path.insert(0, 'benchmarks')
import bench_tiger_train as B
import argparse
args = argparse.Namespace(n_items=1682, n_digits=4, codebook_size=64, history=10, beams=50, batch_size=256, n_batches=2, seed=0,
    hidden_size=None, n_heads=None, d_kv=None, inner_size=None, n_layers_enc=None, n_layers_dec=None, device='cpu')
torch.set_num_threads(1)
ours, hf, _ = B.build_models(args, 'cpu', torch.float32)
data = B.batches(ours, args)
opt = torch.optim.AdamW(ours.parameters(), lr=1e-3); ours.train()
def step():
    loss = ours.calculate_loss(data[0][0]); loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
for _ in range(3): step()
from torch.profiler import profile
with profile() as p:
    for _ in range(5): step()
print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
