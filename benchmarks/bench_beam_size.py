"""β sweep of a trained TIGER (or SpecGR) checkpoint: Recall@K / NDCG@K overall, in-sample and unseen on the
validation split for several beam sizes β, with the evaluation's users/s. It tells search error (recall still rising
with β) from model error, and how many beams a history-excluding evaluation needs to keep K items.

    python benchmarks/bench_beam_size.py --checkpoint saved/TIGER-<date>.pth --beams 50 100 150 \\
        --out benchmarks/reports/beam_size_ml-100k_cpu
"""

import argparse
import csv
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench_gamma_sweep import load_trained  # noqa: E402

from recbole_specgr.atomic import atomic_write  # noqa: E402

COLUMNS = ("num_beams", "recall@10", "ndcg@10", "recall@50", "in_sample/recall@50", "unseen/recall@50", "users_per_s")


def sweep(trainer, eval_data, beams):
    """One evaluation per β; flat result rows."""
    model = trainer.model
    rows = []
    for beam in beams:
        model.num_beams = beam
        if hasattr(model, "_recommender"):  # speculative models: β of the recommender too
            model.speculative_recommender().num_beams = beam
        start = time.perf_counter()
        result = trainer.evaluate(eval_data, load_best_model=False)
        elapsed = time.perf_counter() - start
        rows.append({"num_beams": beam, **result, "users_per_s": result["n_cases"] / elapsed})
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--beams", type=int, nargs="+", required=True, help="β values (each >= max(topk))")
    parser.add_argument("--out", required=True, help="output path without extension (.csv and .md)")
    args = parser.parse_args(argv)
    config, trainer, valid_data, _ = load_trained(args.checkpoint, {})
    rows = sweep(trainer, valid_data, args.beams)
    with atomic_write(f"{args.out}.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        writer.writerows([[row[c] for c in COLUMNS] for row in rows])
    lines = [f"# β sweep of {config['model']} on {config['dataset']} (validation split)", "",
             f"Command: `python benchmarks/bench_beam_size.py --checkpoint {args.checkpoint} --beams "
             f"{' '.join(map(str, args.beams))} --out {args.out}`", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---:|" * len(COLUMNS)]
    lines += ["| " + " | ".join(f"{row[c]:.4f}" if isinstance(row[c], float) else str(row[c]) for c in COLUMNS) + " |"
              for row in rows]
    with atomic_write(f"{args.out}.md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
