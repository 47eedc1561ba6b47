import sys
sys.argv = ['x', '--threads', '1']
from train_step_setup import train_step
ours, step = train_step()
for _ in range(3): step()
from torch.profiler import profile
with profile() as p:
    for _ in range(5): step()
print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
