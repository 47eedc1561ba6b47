import sys, torch, csv
sys.path.insert(0, 'benchmarks')
import recbole_specgr.inference.specgr as S
drop = int(sys.argv[2])
def vs(log_probs, unseen, adjust=True):
    full = log_probs.mean(dim=-1)
    return torch.where(unseen, log_probs[..., :-drop].mean(dim=-1), full)
S.verification_scores = vs
from bench_gamma_sweep import load_trained
from recbole_specgr.trainer.threshold_tuning import sweep_thresholds
from recbole_specgr.inference.specgr import Thresholds
config, trainer, valid_data, test_data = load_trained(sys.argv[1], {})
grid=[Thresholds(g,u) for g in (-1.5,-2,-3) for u in (-1,-1.5,-2,-2.5,-3,-4,-5)]
for split, data in (("valid", valid_data), ("test", test_data)):
    for r in sweep_thresholds(trainer, data, grid):
        print(split, r['specgr_threshold'], r['specgr_unseen_threshold'], *(round(r[k],4) for k in ['recall@50','ndcg@10','in_sample/recall@50','unseen/recall@50','unseen_share']), flush=True)
