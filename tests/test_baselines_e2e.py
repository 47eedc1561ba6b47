"""End-to-end: the baselines of the comparison table run through the CLI on a slice of ml-100k (1 epoch each)."""

import csv
import json

from recbole_specgr import compare
from recbole_specgr.utils import get_trainer

MODELS = ["SASRec", "FDSA", "S3Rec", "UniSRec"]


def test_s3rec_uses_its_two_stage_trainer():
    from recbole.utils import ModelType

    from recbole_specgr.trainer.s3rec_trainer import S3RecTrainer

    assert get_trainer(ModelType.SEQUENTIAL, "S3Rec") is S3RecTrainer


def test_compare_cli_runs_every_baseline(small_config, run_dir):
    overrides = {**small_config, "hidden_size": 16, "inner_size": 32, "n_layers": 1, "MAX_ITEM_LIST_LENGTH": 5,
                 "pretrain_epochs": 1}
    out = str(run_dir / "results" / "cmp")
    argv = ["--models", ",".join(MODELS), "--dataset", "ml-100k", "--out", out]
    status = compare.main(argv + [f"--{k}={v}" for k, v in overrides.items()])
    assert status == 0

    rows = list(csv.reader(open(out + ".csv", newline="", encoding="utf-8")))
    assert rows[0] == compare.table_columns()
    assert [r[0] for r in rows[1:]] == MODELS
    results = {m: json.load(open(f"{out}_{m}.json", encoding="utf-8")) for m in MODELS}
    counts = {m: tuple(results[m]["test"][s]["n_cases"] for s in ("overall", "in_sample", "unseen")) for m in MODELS}
    assert len(set(counts.values())) == 1  # same seed and split for every model
    overall, in_sample, unseen = counts["SASRec"]
    assert overall == in_sample + unseen and unseen > 0
    for model, result in results.items():
        assert result["n_params"] > 0 and result["train_time_s"] > 0, model
        for subset in ("overall", "in_sample", "unseen"):
            for metric in ("recall@10", "ndcg@10", "recall@50", "ndcg@50"):
                assert 0.0 <= result["test"][subset][metric] <= 1.0, (model, subset, metric)
    # UniSRec scores unseen items from their text, so it reaches some unseen targets
    assert results["UniSRec"]["test"]["unseen"]["recall@50"] > 0.0
