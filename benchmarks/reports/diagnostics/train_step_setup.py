"""The TIGER training step that profile_train_step.py and torch_compile_train_step.py measure: TIGER.yaml's sizes on
an ml-100k-sized catalog (1,682 items, C = 64, w = 10), batch 256 of bench_tiger_train's random batches, AdamW, one
thread. Run those scripts from the repository root."""
import argparse
import sys

import torch

sys.path.insert(0, 'benchmarks')
import bench_tiger_train as B  # noqa: E402


def step_args(n_batches=2):
    """bench_tiger_train's arguments for this setup (``build_models``, ``batches``)."""
    return argparse.Namespace(n_items=1682, n_digits=4, codebook_size=64, history=10, beams=50, batch_size=256,
                              n_batches=n_batches, seed=0, hidden_size=None, n_heads=None, d_kv=None,
                              inner_size=None, n_layers_enc=None, n_layers_dec=None, device='cpu')


def train_step():
    """``(ours, step)``: our TIGER and ``step(loss_fn=None)``, one forward + loss + backward + AdamW step on the first
    batch with ``loss_fn`` (default ``ours.calculate_loss``), returning the (detached) loss."""
    args = step_args()
    torch.set_num_threads(1)
    ours, _hf, _ = B.build_models(args, 'cpu', torch.float32)
    data = B.batches(ours, args)
    opt = torch.optim.AdamW(ours.parameters(), lr=1e-3)
    ours.train()

    def step(loss_fn=None):
        loss = (loss_fn or ours.calculate_loss)(data[0][0])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    return ours, step
