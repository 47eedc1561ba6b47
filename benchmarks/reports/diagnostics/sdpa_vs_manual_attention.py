import torch, time
import torch.nn.functional as F
torch.set_num_threads(1)
def bench(f, n=20):
    f(); t=time.perf_counter()
    for _ in range(n): f()
    return (time.perf_counter()-t)/n*1000
q=torch.randn(12800,2,3,32); k=torch.randn(12800,2,3,32); v=torch.randn(12800,2,3,32); m=torch.randn(1,2,3,3)
m=m.masked_fill(torch.triu(torch.ones(3,3,dtype=torch.bool),1), float('-inf'))
def manual():
    a=(q@k.transpose(-1,-2))*(32**-0.5)+m
    return a.softmax(-1)@v
print('self sdpa', bench(lambda: F.scaled_dot_product_attention(q,k,v,attn_mask=m)), 'manual', bench(manual))
print(torch.allclose(F.scaled_dot_product_attention(q,k,v,attn_mask=m), manual(), atol=1e-5))
# cross
qc=torch.randn(256,2,150,32); kc=torch.randn(256,2,12,32); vc=torch.randn(256,2,12,32); mc=torch.ones(256,1,1,12,dtype=torch.bool)
def manualc():
    a=(qc@kc.transpose(-1,-2))*(32**-0.5)
    a=a.masked_fill(~mc, float('-inf'))
    return a.softmax(-1)@vc
print('cross sdpa', bench(lambda: F.scaled_dot_product_attention(qc,kc,vc,attn_mask=mc)), 'manual', bench(manualc))
