"""Does a retuned checkpoint alone recommend as its result JSON reports? Rebuilds the model, its config and its
dataloaders from the checkpoint the JSON names (the setting chosen on validation is in the file) and evaluates the
test split once.

    OMP_NUM_THREADS=2 python benchmarks/reports/diagnostics/retuned_checkpoint_reproduces.py \\
        benchmarks/reports/table_ml-100k_cpu_session24_s2020_SpecGRPP.json   # (the checkpoint must be on this machine)
"""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_gamma_sweep import load_trained  # noqa: E402

result = json.load(open(sys.argv[1]))
config, trainer, valid_data, test_data = load_trained(result["checkpoint"], {"show_progress": False})
test = trainer.evaluate(test_data, load_best_model=False)
recommender = trainer.model.speculative_recommender()
print(sys.argv[1], "rank_all_unseen", recommender.rank_all_unseen, "setting", trainer.model.specgr_setting)
print("from the checkpoint: test R@50", test["recall@50"], "unseen", test["unseen/recall@50"],
      "| the JSON:", result["test"]["overall"]["recall@50"], result["test"]["unseen"]["recall@50"])
