"""TIGER_C (unseen share 0.1) of one trained TIGER checkpoint under whichever ``recbole_specgr`` ``PYTHONPATH`` gives:
what session 19's per-k unseen slots move (output: tiger_c_code_variants_session19.txt). Run from the repository root:

    python run_recbole_specgr.py --model=TIGER --dataset=ml-100k --MAX_ITEM_LIST_LENGTH=10 --epochs=4 --eval_step=2 \
        --result_json=/tmp/tigerc/tiger.json
    PYTHONPATH=<a package folder> python benchmarks/reports/diagnostics/tiger_c_code_variants.py saved/TIGER-<date>.pth
"""
import json, sys
import torch
torch.set_num_threads(2)
import recbole_specgr
from recbole_specgr.quick_start import run_recbole_specgr
r = run_recbole_specgr(model="TIGER", dataset="ml-100k", config_dict={
    "MAX_ITEM_LIST_LENGTH": 10, "epochs": 0, "tiger_c_unseen_share": 0.1, "init_checkpoint": sys.argv[1],
    "show_progress": False, "state": "WARNING"}, saved=False)
t = r["test"]
print("RESULT", recbole_specgr.__file__, json.dumps({f"{s}/{k}": round(float(v), 4) for s in ("overall", "in_sample", "unseen") for k, v in t[s].items() if k in ("recall@10", "ndcg@10", "recall@50")}))
