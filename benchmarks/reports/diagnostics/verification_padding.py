"""How many of the rows verification decoded were padding, before session 28 (issue 13, speed_cpu.md section 17): per
kind of ``SpeculativeRecommender._decode`` call (digits: 3 for unseen drafts, 4 for seen ones), the real drafts it
decoded, how many distinct (user, c1, c2) prefixes they had, and the rows (candidate slots) of the verifier's leaf
``digit_log_probs`` calls, padding included. Run from the root of a tree at ``bf08b30`` (the code that padded with a
stand-in item; a git worktree with ``cache/`` and ``saved/`` linked), one thread:

    OMP_NUM_THREADS=1 python benchmarks/reports/diagnostics/verification_padding.py saved/SpecGRPP-<date>.pth \\
        > benchmarks/reports/diagnostics/verification_padding.txt
"""
import sys, torch
from pathlib import Path
ROOT = Path.cwd(); sys.path.insert(0, str(ROOT)); sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_gamma_sweep import load_trained
from recbole_specgr.allocator import keep_freed_memory
from recbole_specgr.inference import specgr
from recbole_specgr.model.sequential_recommender import tiger
torch.set_num_threads(1)
config, trainer, valid_data, test_data = load_trained(sys.argv[1], {"show_progress": False, "state": "ERROR"})
keep_freed_memory()
st = {}
plain_decode = specgr.SpeculativeRecommender._decode
def _decode(self, enc, items, todo, log_probs, digits=None):
    codes = self.verifier.item2codes[items]  # [B, δ, l]
    key = (codes[..., 0] * 1000 + codes[..., 1])  # per user
    n = int(todo.sum()); d = digits or self.n_digits
    distinct = 0
    for b in torch.nonzero(todo.any(1)).squeeze(1).tolist():
        distinct += int(torch.unique(key[b][todo[b]]).numel())
    s = st.setdefault(d, [0, 0, 0])
    s[0] += n; s[1] += distinct
    return plain_decode(self, enc, items, todo, log_probs, digits)
specgr.SpeculativeRecommender._decode = _decode
plain_dlp = tiger.TIGER.digit_log_probs
rows = {}
def dlp(self, enc, cand, digits=None):
    if cand.size(0) <= 4096 // max(1, cand.size(1) * max((digits or 4) - 1, 1)) + 1:  # leaf calls only
        rows[digits or 4] = rows.get(digits or 4, 0) + cand.numel()
    return plain_dlp(self, enc, cand, digits)
tiger.TIGER.digit_log_probs = dlp
for name, run in (("valid", lambda: trainer.tune_threshold(valid_data)), ("test", lambda: trainer.evaluate(test_data, load_best_model=False))):
    st.clear(); rows.clear(); run()
    for d, (n, distinct, _) in sorted(st.items()):
        print(f"{name}: digits {d}: drafts decoded {n}, distinct (user, c1, c2) {distinct} ({distinct/max(n,1):.1%}), rows incl. padding {rows.get(d)}")
