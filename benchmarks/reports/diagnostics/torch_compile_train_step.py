import time

import torch
from train_step_setup import train_step
ours, step = train_step()
loss_fn = ours.calculate_loss
t0=time.perf_counter()
compiled = torch.compile(loss_fn)
print('compiled first', float(step(compiled)), time.perf_counter()-t0, flush=True)
for _ in range(2): step(compiled); step(loss_fn)
T={'eager':0,'compiled':0}
for _ in range(6):
    for name, fn in (('eager', loss_fn), ('compiled', compiled)):
        t=time.perf_counter(); step(fn); T[name]+=time.perf_counter()-t
print({k: round(6*256/v) for k,v in T.items()}, 'rows/s')
