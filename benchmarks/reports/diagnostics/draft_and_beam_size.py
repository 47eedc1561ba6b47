"""Ad-hoc (issue 10): SpecGR++ with a larger draft size δ and/or beam size β, γ grid, valid and test.

    OMP_NUM_THREADS=1 python benchmarks/reports/diagnostics/draft_and_beam_size.py saved/SpecGRPP-<seed 2020>.pth
"""
import sys
from pathlib import Path
ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT)); sys.path.insert(0, str(ROOT / 'benchmarks'))
from bench_gamma_sweep import load_trained
from recbole_specgr.trainer.threshold_tuning import sweep_thresholds
config, trainer, valid_data, test_data = load_trained(sys.argv[1], {"show_progress": False})
rec = trainer.model.speculative_recommender()
grid = [-1.5, -2.0, -3.0, -4.0, -6.0, -8.0]
for delta, beta in ((100, 50), (50, 100), (100, 100)):
    rec.draft_size, rec.num_beams = delta, beta
    trainer.model.num_beams = beta
    res = {}
    for split, data in (("valid", valid_data), ("test", test_data)):
        res[split] = sweep_thresholds(trainer, data, grid)
    best = max(range(len(grid)), key=lambda i: res["valid"][i]["recall@50"])
    for i, g in enumerate(grid):
        v, t = res["valid"][i], res["test"][i]
        print(f"δ={delta} β={beta} γ={g:g}{' *' if i == best else '  '} valid {v['recall@50']:.4f} | test {t['recall@50']:.4f} "
              f"in {t['in_sample/recall@50']:.4f} un {t['unseen/recall@50']:.4f} N@10 {t['ndcg@10']:.4f}", flush=True)
