"""How the rule that picks SpecGR++'s inference setting (γ, α, v_u, β) on validation fares on validation rows it did
not see: each trained checkpoint's grid is evaluated once on the validation split; then, for many random halves A/B
of the validation rows, each rule chooses on A and is scored on B (overall, in-sample and unseen R@50, N@10 of the
chosen setting). No test data is used. Rules: the best valid R@50 alone; one paired standard error of it, ties broken
by NDCG@10 (the quick start's `specgr_threshold_tiebreak`); the same, ties broken by unseen R@50. Run from the
repository root:

    python benchmarks/reports/diagnostics/tiebreak_split_validation.py saved/SpecGRPP-<date>.pth ... \\
        (its output, with a header: benchmarks/reports/diagnostics/tiebreak_split_validation.md)
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from bench_gamma_sweep import load_trained  # noqa: E402
from recbole_specgr import evaluation  # noqa: E402
from recbole_specgr.trainer.threshold_tuning import select_setting, sweep_with_row_values  # noqa: E402

RULES = {"best R@50": None, "1 SE, ties by N@10": "ndcg@10", "1 SE, ties by unseen R@50": "unseen/recall@50"}


def per_row(checkpoint):
    """Each grid setting's per-row ranks of the validation targets [settings, rows], the rows' seen flags and the
    settings (the checkpoint's own grid)."""
    _, trainer, valid_data, _ = load_trained(checkpoint, {"show_progress": False})
    made = []
    init = evaluation.SplitMetrics.__init__

    def recording_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        made.append(self)

    evaluation.SplitMetrics.__init__ = recording_init
    try:
        rows, _ = sweep_with_row_values(trainer, valid_data, trainer.threshold_grid)
    finally:
        evaluation.SplitMetrics.__init__ = init
    ranks = torch.stack([torch.cat(m.ranks).double() for m in made])
    return ranks, torch.cat(made[0].seen), rows


def metrics_on(ranks, seen, part):
    """Rows (one per setting) of the metrics on the validation rows ``part``, and R@50's per-row values."""
    r, s = ranks[:, part], seen[part]
    hit50 = (r < 50).double()
    ndcg10 = torch.where(r < 10, 1.0 / torch.log2(r + 2.0), torch.zeros_like(r))
    out = [{"recall@50": float(hit50[i].mean()), "ndcg@10": float(ndcg10[i].mean()),
            "in_sample/recall@50": float(hit50[i][s].mean()), "unseen/recall@50": float(hit50[i][~s].mean())}
           for i in range(len(r))]
    return out, hit50


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--splits", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(2)
    keys = ("recall@50", "in_sample/recall@50", "unseen/recall@50", "ndcg@10")
    print("| checkpoint | rule | " + " | ".join(f"B {k}" for k in keys) + " | chose β = 2 |")
    print("|---|---|" + "---|" * (len(keys) + 1))
    totals = {rule: torch.zeros(len(keys) + 1) for rule in RULES}
    for checkpoint in args.checkpoints:
        ranks, seen, grid_rows = per_row(checkpoint)
        g = torch.Generator().manual_seed(args.seed)
        sums = {rule: torch.zeros(len(keys) + 1) for rule in RULES}
        for _ in range(args.splits):
            order = torch.randperm(ranks.shape[1], generator=g)
            half_a, half_b = order[: len(order) // 2], order[len(order) // 2:]
            rows_a, values_a = metrics_on(ranks, seen, half_a)
            rows_b, _ = metrics_on(ranks, seen, half_b)
            for rule, tiebreak in RULES.items():
                i = select_setting(rows_a, "recall@50", tiebreak, values_a if tiebreak else None)
                beta2 = float(grid_rows[i].get("specgr_text_weight") == 2.0)
                sums[rule] += torch.tensor([rows_b[i][k] for k in keys] + [beta2])
        for rule in RULES:
            mean = sums[rule] / args.splits
            totals[rule] += mean
            print(f"| {os.path.basename(checkpoint)} | {rule} | " + " | ".join(f"{v:.4f}" for v in mean[:-1])
                  + f" | {mean[-1]:.0%} |")
    for rule in RULES:
        mean = totals[rule] / len(args.checkpoints)
        print(f"| **mean of {len(args.checkpoints)}** | {rule} | " + " | ".join(f"{v:.4f}" for v in mean[:-1])
              + f" | {mean[-1]:.0%} |")


if __name__ == "__main__":
    main()
