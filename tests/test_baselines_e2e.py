"""End-to-end: the baselines of the comparison table run through the CLI on a slice of ml-100k (1 epoch each)."""

import csv
import json

from recbole_specgr import compare
from recbole_specgr.utils import get_trainer

MODELS = ["SASRec", "FDSA", "S3Rec", "UniSRec"]
# (overall, in_sample, unseen) cases of the ml-100k slice (users 1-150: 14,949 interactions), worked out from the raw
# file apart from the package: time quantiles 0.8 / 0.9 of all interactions; items with release_year >= 1997 lose
# their training-period interactions; a row per interaction after a user's first; an item is seen when it occurs in
# the training period of a user with at least two training-period interactions (1,032 items).
SPLIT_CASES = {"valid": (1481, 1063, 418), "test": (1484, 1161, 323)}
RANDOM_RECALL_50 = 50 / 1682  # 1,682 items in ml-100k.item


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
    for model, result in results.items():  # every model on the same split (see SPLIT_CASES)
        for split, cases in SPLIT_CASES.items():
            assert tuple(result[split][s]["n_cases"] for s in ("overall", "in_sample", "unseen")) == cases, model
        assert result["n_params"] > 0 and result["train_time_s"] > 0, model
        assert result["n_params_all"] == result["n_params"], model  # nothing frozen in these models
        # one epoch already ranks well above chance: a random scorer's expected Recall@50 is 50 / 1682
        assert result["test"]["overall"]["recall@50"] > 2 * RANDOM_RECALL_50, model
        assert result["test"]["overall"]["ndcg@50"] <= result["test"]["overall"]["recall@50"], model
    for model in ("SASRec", "FDSA", "S3Rec"):  # item-ID models learn the seen items
        assert results[model]["test"]["in_sample"]["recall@50"] > 2 * RANDOM_RECALL_50, model
    # UniSRec scores unseen items from their text, so it beats chance on unseen targets too
    assert results["UniSRec"]["test"]["unseen"]["recall@50"] > 2 * RANDOM_RECALL_50
