"""γ sweep of a trained SpecGR model (paper Fig. 4): Recall@K overall / in-sample / unseen, acceptance rate and
users/s against the threshold γ, on the validation and test splits, from one checkpoint.

Writes ``<out>.csv`` (one row per split and γ) and ``<out>.png`` (test split: R@K per subset, and users/s). With
``--unseen_grid`` every γ is tried with every γ_u (the threshold for drafts of unseen items) in one pass per split
(no users/s, no plot).

Usage::

    python run_recbole_specgr.py --model=SpecGRPP --dataset=ml-100k          # leaves saved/SpecGRPP-*.pth
    python benchmarks/bench_gamma_sweep.py --checkpoint saved/SpecGRPP-<date>.pth \\
        --grid -1 -1.5 -2 -2.5 -3 -3.5 -4 -5 --out benchmarks/reports/gamma_sweep_ml-100k_cpu
    python benchmarks/bench_gamma_sweep.py --checkpoint saved/SpecGRPP-<date>.pth \
        --grid -2 -3 -4 --unseen_grid -4 -5 -6 -8 --out benchmarks/reports/unseen_threshold_ml-100k_cpu
"""

import argparse
import csv
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from recbole_specgr import compat  # noqa: E402,F401  (must precede recbole imports)
from recbole.data import data_preparation  # noqa: E402
from recbole.utils import init_logger, init_seed  # noqa: E402

from recbole_specgr.atomic import atomic_write  # noqa: E402
from recbole_specgr.compat import load_checkpoint  # noqa: E402
from recbole_specgr.config import config_from_saved  # noqa: E402
from recbole_specgr.inference.specgr import Thresholds  # noqa: E402
from recbole_specgr.trainer.threshold_tuning import sweep_thresholds  # noqa: E402
from recbole_specgr.utils import create_dataset, get_model, get_trainer  # noqa: E402

logger = logging.getLogger()


def load_trained(checkpoint_path, overrides):
    """The checkpoint's config (with ``overrides``), its dataloaders and a trainer holding the trained model."""
    checkpoint = load_checkpoint(checkpoint_path, map_location="cpu")
    config = config_from_saved(checkpoint["config"], **overrides)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    trainer.load_model(checkpoint_path)
    return config, trainer, valid_data, test_data


def main_job_passes(checkpoint_path, threads: int = 1, overrides=None):
    """The trainer of a checkpoint and the main job's two evaluation passes on it, as (name, run) pairs: the
    validation grid pass (``trainer.tune_threshold``: every setting of the grid, the best kept) and the test pass at
    that setting. torch runs ``threads`` threads, and glibc keeps freed memory where the checkpoint's config says so,
    as the main job does. ``overrides``: config keys to change (e.g. ``eval_batch_size``)."""
    import torch

    from recbole_specgr.allocator import keep_freed_memory

    torch.set_num_threads(threads)
    config, trainer, valid_data, test_data = load_trained(checkpoint_path, {"show_progress": False, "state": "ERROR",
                                                                            **(overrides or {})})
    if config["keep_freed_memory"]:
        keep_freed_memory()
    return trainer, [("valid grid pass", lambda: trainer.tune_threshold(valid_data)),
                     ("test pass", lambda: trainer.evaluate(test_data, load_best_model=False))]


def timed_passes(passes):
    """Run each ``(name, run)`` of :func:`main_job_passes` once, in order: ``[(result, seconds), ...]``."""
    import time

    timed = []
    for _, run in passes:
        start = time.perf_counter()
        timed.append((run(), time.perf_counter() - start))
    return timed


def timed_sweep(trainer, eval_data, thresholds, beam_baseline=False):
    """One full speculative evaluation per γ (so users/s is measured at each γ); flat results with the γ and δ. With
    ``beam_baseline``, one more evaluation with δ = 0 first: no drafts, so the output is the verifier's own
    constrained beam search (what SpecGR's speed is compared with), timed the same way."""
    rows = []
    recommender = trainer.model.speculative_recommender()
    draft_size = recommender.draft_size
    for gamma, delta in ([(thresholds[0], 0)] if beam_baseline else []) + [(g, draft_size) for g in thresholds]:
        trainer.model.set_specgr_threshold(gamma)
        recommender.draft_size = delta
        rows.append({"specgr_threshold": float(gamma) if delta else float("nan"), "draft_size": delta,
                     **trainer.evaluate(eval_data, load_best_model=False)})
    recommender.draft_size = draft_size
    return rows


def write_plot(rows, k, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    test = sorted((r for r in rows if r["split"] == "test" and r.get("draft_size", 1)),
                  key=lambda r: r["specgr_threshold"])
    beam = [r for r in rows if r["split"] == "test" and r.get("draft_size", 1) == 0]
    gammas = [r["specgr_threshold"] for r in test]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for key, label in ((f"recall@{k}", "overall"), (f"in_sample/recall@{k}", "in-sample"),
                       (f"unseen/recall@{k}", "unseen")):
        left.plot(gammas, [r[key] for r in test], marker="o", label=label)
    left.set_xlabel("γ (acceptance threshold)")
    left.set_ylabel(f"Recall@{k} (test)")
    left.legend()
    left.grid(alpha=0.3)
    right.plot(gammas, [r["users_per_s"] for r in test], marker="o", color="tab:red", label="users/s")
    for r in beam:  # the verifier's own beam search (δ = 0), for comparison
        right.axhline(r["users_per_s"], color="tab:red", linestyle="--", label="beam search (δ = 0)")
    right.set_xlabel("γ (acceptance threshold)")
    right.set_ylabel("users/s (test, red)")
    twin = right.twinx()
    twin.plot(gammas, [r["unseen_share"] for r in test], marker="s", color="tab:gray", label="unseen share")
    twin.set_ylabel("share of unseen items in the top-K (grey)")
    right.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="a SpecGRPP / SpecGRAux checkpoint (InductiveTrainer .pth)")
    parser.add_argument("--grid", type=float, nargs="+", required=True, help="γ values")
    parser.add_argument("--unseen_grid", type=float, nargs="+", default=None,
                        help="γ_u values, each tried with every γ (one pass per split, no users/s, no plot)")
    parser.add_argument("--out", required=True, help="output path without extension (.csv and .png are written)")
    parser.add_argument("--beam_baseline", action="store_true",
                        help="also time δ = 0 (the verifier's plain constrained beam search) on each split")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: the checkpoint's)")
    parser.add_argument("--eval_batch_size", type=int, default=None)
    args = parser.parse_args(argv)
    if args.unseen_grid is None:
        try:
            import matplotlib  # noqa: F401  (the plot is written after the sweeps: fail before them)
        except ImportError:
            parser.error("the users/s plot needs matplotlib: pip install -e \".[bench]\"")

    overrides = {key: value for key, value in (("device", args.device), ("eval_batch_size", args.eval_batch_size))
                 if value is not None}
    config, trainer, valid_data, test_data = load_trained(args.checkpoint, overrides)
    rows = []
    for split, data in (("valid", valid_data), ("test", test_data)):
        if args.unseen_grid is None:
            split_rows = timed_sweep(trainer, data, args.grid, args.beam_baseline)
        else:
            split_rows = sweep_thresholds(trainer, data, [Thresholds(g, u) for g in args.grid for u in args.unseen_grid])
        for row in split_rows:
            rows.append({"split": split, **row})
            logger.info(f"{split} γ={row['specgr_threshold']:g} γ_u={row.get('specgr_unseen_threshold', 'γ')}: " + ", ".join(
                f"{key} {row[key]:.4f}" for key in ("recall@50", "in_sample/recall@50", "unseen/recall@50",
                                                    "acceptance_rate", "users_per_s") if key in row))
    columns = list(rows[0])
    with atomic_write(args.out + ".csv", "w") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    if args.unseen_grid is None:
        write_plot(rows, max(config["topk"]), args.out + ".png")
    logger.info(f"wrote {args.out}.csv" + ("" if args.unseen_grid else f" and {args.out}.png")
                + f" ({config['model']} on {config['dataset']}, device {config['device']})")


if __name__ == "__main__":
    main()
