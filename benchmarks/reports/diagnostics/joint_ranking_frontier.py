"""The joint ranking's overall / unseen trade-off (issue 10): a run_table SpecGR++ JSON's chosen γ and α, v_u swept
on valid and test (weights as trained). A higher v_u moves unseen items up the list, at the cost of seen ones.

    OMP_NUM_THREADS=1 python benchmarks/reports/diagnostics/joint_ranking_frontier.py \\
        benchmarks/reports/table_ml-100k_cpu_s2020_SpecGRPP.json
"""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_gamma_sweep import load_trained  # noqa: E402
from recbole_specgr.inference.specgr import Thresholds  # noqa: E402
from recbole_specgr.trainer.threshold_tuning import sweep_thresholds  # noqa: E402

result = json.loads(Path(sys.argv[1]).read_text())
gamma, alpha, chosen = result["specgr_threshold"], result["specgr_draft_weight"], result["specgr_unseen_score"]
scores = [-2.0, -1.875, -1.75, -1.625, -1.5, -1.375, -1.25, -1.125, -1.0]
settings = [Thresholds(gamma, gamma, alpha, v) for v in scores]
_, trainer, valid_data, test_data = load_trained(result["checkpoint"], {"show_progress": False})
rows = {split: sweep_thresholds(trainer, data, settings) for split, data in (("valid", valid_data),
                                                                             ("test", test_data))}
print(f"{sys.argv[1]}: γ = {gamma:g}, α = {alpha:g} (v_u chosen on validation: {chosen:g})\n")
print("| v_u | valid R@50 overall / in-sample / unseen | test R@50 overall / in-sample / unseen | test N@10 |")
print("|---|---|---|---|")
for v, valid, test in zip(scores, rows["valid"], rows["test"]):
    cells = [" / ".join(f"{r[k]:.4f}" for k in ("recall@50", "in_sample/recall@50", "unseen/recall@50"))
             for r in (valid, test)]
    mark = " (chosen)" if v == chosen else ""
    print(f"| {v:g}{mark} | {cells[0]} | {cells[1]} | {test['ndcg@10']:.4f} |")
