"""The validation choice and test figures of one trained checkpoint under whichever ``recbole_specgr`` ``PYTHONPATH``
gives: to measure what an evaluation change alone moves (main_job_cpu.md, session 19). One result line, JSON.

    # A = the code before a change, B = with it (e.g. `git archive <commit> recbole_specgr | tar -x -C A`)
    PYTHONPATH=A python benchmarks/reports/diagnostics/eval_code_variants.py saved/SpecGRPP-<date>.pth
    PYTHONPATH=B python benchmarks/reports/diagnostics/eval_code_variants.py saved/SpecGRPP-<date>.pth \
        '{"specgr_draft_weight_grid": [0]}'   # optional config overrides, JSON (here: the paper's ranking only)

Run from the repository root (the checkpoint's relative cache folder); the script's own folder, not the checkout,
is first on ``sys.path``, so the package comes from ``PYTHONPATH`` (hence its own loading steps, as
``bench_eval_versions.child``: ``bench_gamma_sweep.load_trained`` would put this checkout first).
"""
import json
import sys
import time

import torch

torch.set_num_threads(2)
import recbole_specgr  # noqa: E402
from recbole_specgr import compat  # noqa: E402,F401  (must precede recbole imports)
from recbole.data import data_preparation  # noqa: E402
from recbole.utils import init_logger, init_seed  # noqa: E402
from recbole_specgr.compat import load_checkpoint  # noqa: E402
from recbole_specgr.config import config_from_saved  # noqa: E402
from recbole_specgr.utils import create_dataset, get_model, get_trainer  # noqa: E402

KEYS = ("recall@10", "ndcg@10", "recall@50", "in_sample/recall@50", "unseen/recall@10", "unseen/ndcg@10",
        "unseen/recall@50")

path = sys.argv[1]
overrides = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
config = config_from_saved(load_checkpoint(path, map_location="cpu")["config"], show_progress=False, state="WARNING",
                           **overrides)
init_seed(config["seed"], config["reproducibility"])
init_logger(config)
_, valid_data, test_data = data_preparation(config, create_dataset(config))
trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, get_model(config["model"])(config,
                                                                                               valid_data._dataset))
trainer.load_model(path)
start = time.perf_counter()
trainer.tune_threshold(valid_data)
test = trainer.evaluate(test_data, load_best_model=False)
print("RESULT", json.dumps({"package": recbole_specgr.__file__, "overrides": overrides,
                            "best_valid": trainer.best_valid_score, **{k: round(float(test[k]), 4) for k in KEYS},
                            "eval_s": round(time.perf_counter() - start, 1)}))
