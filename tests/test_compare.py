"""compare: table layout, formatting and missing values from hand-written result dicts; CLI parsing."""

import csv
import json
import re

import pytest

from recbole_specgr import compare


def subset(r10, n10, r50, n50, n_cases):
    return {"recall@10": r10, "ndcg@10": n10, "recall@50": r50, "ndcg@50": n50, "n_cases": n_cases}


SASREC = {
    "model": "SASRec",
    "dataset": "ml-100k",
    "n_params": 123456,
    "train_time_s": 12.345,
    "eval_time_s": 1.0,
    "config": {},
    "valid": {"overall": subset(0.5, 0.5, 0.5, 0.5, 7), "in_sample": {}, "unseen": {}},
    "test": {
        "overall": subset(0.1, 0.05, 0.3, 0.08, 100),
        "in_sample": subset(0.12, 0.06, 0.35, 0.09, 80),
        "unseen": subset(0.0, 0.0, 0.0, 0.0, 20),
    },
}
UNISREC = {
    "model": "UniSRec",
    "dataset": "ml-100k",
    "n_params": 2000,
    "train_time_s": 3.0,
    "test": {
        "overall": subset(0.2, 0.1, 0.4, 0.15, 100),
        "in_sample": subset(0.21, 0.11, 0.41, 0.16, 80),
        # no unseen subset at all; a NaN metric counts as missing too
        "unseen": {},
    },
}
EXPECTED_COLUMNS = [
    "model",
    "overall R@10", "overall N@10", "overall R@50", "overall N@50",
    "in-sample R@10", "in-sample N@10", "in-sample R@50", "in-sample N@50",
    "unseen R@10", "unseen N@10", "unseen R@50", "unseen N@50",
    "#params", "train time (s)",
]  # fmt: skip


def test_columns_are_exactly_the_table_layout():
    assert compare.table_columns() == EXPECTED_COLUMNS


def test_columns_follow_the_metrics_and_cutoffs_the_results_hold(tmp_path):
    """Runs with ``topk: [5, 20]`` and ``metrics: [NDCG]`` are tabled by what they computed, not Table 3's @10/@50."""
    def ndcg_only(n5, n20, cases):
        return {"ndcg@20": n20, "ndcg@5": n5, "n_cases": cases}

    result = {"model": "SASRec", "n_params": 10, "train_time_s": 1.0,
              "test": {"overall": ndcg_only(0.1, 0.2, 9), "in_sample": ndcg_only(0.3, 0.4, 5), "unseen": {}}}
    _, csv_path = compare.write_table([result], str(tmp_path / "cmp"))
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows == [["model", "overall N@5", "overall N@20", "in-sample N@5", "in-sample N@20", "unseen N@5",
                     "unseen N@20", "#params", "train time (s)"],
                    ["SASRec", "0.1000", "0.2000", "0.3000", "0.4000", "–", "–", "10", "1.0"]]
    assert compare.metric_keys([SASREC, result]) == ["ndcg@5", "recall@10", "ndcg@10", "ndcg@20", "recall@50",
                                                     "ndcg@50"]
    assert compare.metric_keys([{"test": {}}]) == list(compare.TABLE3_METRICS)


def test_csv_values_and_missing_subset(tmp_path):
    unisrec = json.loads(json.dumps(UNISREC))
    unisrec["test"]["in_sample"]["ndcg@50"] = float("nan")
    path = tmp_path / "sasrec.json"
    path.write_text(json.dumps(SASREC))
    md_path, csv_path = compare.write_table([str(path), unisrec], str(tmp_path / "cmp"))
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == EXPECTED_COLUMNS
    assert rows[1] == [
        "SASRec",
        "0.1000", "0.0500", "0.3000", "0.0800",
        "0.1200", "0.0600", "0.3500", "0.0900",
        "0.0000", "0.0000", "0.0000", "0.0000",
        "123456", "12.3",
    ]  # fmt: skip
    assert rows[2] == [
        "UniSRec",
        "0.2000", "0.1000", "0.4000", "0.1500",
        "0.2100", "0.1100", "0.4100", "–",
        "–", "–", "–", "–",
        "2000", "3.0",
    ]  # fmt: skip
    assert len(rows) == 3


def test_markdown_header_has_case_counts_and_columns(tmp_path):
    md_path, _ = compare.write_table([SASREC, UNISREC], str(tmp_path / "sub" / "cmp"))
    lines = open(md_path, encoding="utf-8").read().splitlines()
    assert lines[0] == "# ml-100k — test"
    assert lines[2] == "test cases: overall 100 · in-sample 80 · unseen 20"
    assert lines[4] == "| " + " | ".join(EXPECTED_COLUMNS) + " |"
    assert lines[5].count("|") == len(EXPECTED_COLUMNS) + 1
    assert lines[6] == (
        "| SASRec | 0.1000 | 0.0500 | 0.3000 | 0.0800 | 0.1200 | 0.0600 | 0.3500 | 0.0900 "
        "| 0.0000 | 0.0000 | 0.0000 | 0.0000 | 123,456 | 12.3 |"
    )
    assert lines[7].endswith("| – | – | – | – | 2,000 | 3.0 |")
    assert len(lines) == 8


def test_valid_split_and_bad_split(tmp_path):
    md_path, csv_path = compare.write_table([SASREC, UNISREC], str(tmp_path / "v"), split="valid")
    rows = list(csv.reader(open(csv_path, newline="", encoding="utf-8")))
    assert rows[1][1:5] == ["0.5000"] * 4 and rows[1][5:13] == ["–"] * 8
    assert rows[2][1:13] == ["–"] * 12  # UniSRec has no valid results
    assert "valid cases: overall 7 · in-sample – · unseen –" in open(md_path, encoding="utf-8").read()
    with pytest.raises(ValueError, match="split"):
        compare.write_table([SASREC], str(tmp_path / "x"), split="train")


def test_parse_args_models_files_and_overrides(capsys):
    args, config_dict = compare.parse_args(
        ["--models", "SASRec, UniSRec", "--dataset", "ml-100k", "--config_files", "a.yaml b.yaml", "c.yaml",
         "--epochs=2", "--learning_rate=0.01", "--seed=~", "--out", "results/x"]
    )  # fmt: skip
    assert args.models == ["SASRec", "UniSRec"]
    assert args.dataset == "ml-100k" and args.out == "results/x" and args.split == "test"
    assert args.config_files == ["a.yaml", "b.yaml", "c.yaml"]
    assert config_dict == {"epochs": "2", "learning_rate": "0.01", "seed": None}  # ~ is null, as on the main command
    with pytest.raises(SystemExit) as exit_info:
        compare.parse_args(["--models", "SASRec", "--dataset", "ml-100k", "--out", "x", "stray"])
    assert exit_info.value.code == 2 and "stray" in capsys.readouterr().err


def test_main_runs_each_model_and_writes_table(tmp_path, monkeypatch, caplog):
    from recbole_specgr import quick_start

    calls = []

    def fake_run(model, dataset, config_file_list=None, config_dict=None, result_json=None, **kwargs):
        calls.append((model, dataset, config_file_list, config_dict))
        if model == "UniSRec":
            raise RuntimeError("boom")
        if model == "S3Rec":
            raise ValueError("item_attribute: no such field")
        result = dict(SASREC, model=model)
        with open(result_json, "w", encoding="utf-8") as f:
            json.dump(result, f)
        return result

    monkeypatch.setattr(quick_start, "run_recbole_specgr", fake_run)
    out = str(tmp_path / "cmp")
    status = compare.main(["--models", "SASRec,UniSRec,S3Rec,FDSA", "--dataset", "ml-100k", "--seed=7", "--out", out])
    assert status == 1  # two models failed, the others are still in the table
    assert [c[0] for c in calls] == ["SASRec", "UniSRec", "S3Rec", "FDSA"]
    assert all(c[1] == "ml-100k" and c[3] == {"seed": "7"} for c in calls)
    rows = list(csv.reader(open(out + ".csv", newline="", encoding="utf-8")))
    assert [r[0] for r in rows[1:]] == ["SASRec", "FDSA"]
    assert open(out + ".md", encoding="utf-8").read().rstrip().endswith(
        "Failed, so not in the table: UniSRec, S3Rec (the run's log has the reason).")
    # a bug keeps its traceback; bad data or settings found while running are one line
    failures = {r.message: r.exc_info is not None for r in caplog.records if "failed" in r.message}
    assert failures == {"compare: UniSRec on ml-100k failed": True,
                        "compare: S3Rec on ml-100k failed: item_attribute: no such field": False,
                        "compare: failed models: UniSRec, S3Rec": False}
    assert json.load(open(out + "_FDSA.json", encoding="utf-8"))["model"] == "FDSA"


@pytest.mark.parametrize("models, settings, message", [
    ("SASRec,NoSuchRec", [], "model 'NoSuchRec' is neither"),
    ("SASRec,FDSA", ["--epochs=abc"], "epochs: expected int .* from the command line$"),
    ("SASRec,FDSA", ["--epoch=3"], r"epoch: no model or dataset has this setting \(from the command line\); did you mean "
                                   "'epochs'"),
    # a text model without texts: found when its dataset was built, after SASRec had trained
    ("SASRec,TIGER", ["--text_fields=~"], r"text_fields: TIGER reads item texts, and dataset 'ml-100k' sets none .* "
                                          r"from the command line$"),
    ("SASRec,TIGER", ["--lr_scheduler=exponential"], r"lr_scheduler: expected one of constant, linear, cosine, got "
                                                     r"'exponential' from the command line$"),
    ("SASRec,SpecGRAux", ["--hidden_size=64"], "hidden_size: a setting of SpecGRAux's component model"),
    ("SASRec,FDSA,SASRec", [], "models: SASRec given twice; expected each model once"),
    ("SASRec", ["--config_files", "missing.yaml"], r"No such file or directory: 'missing\.yaml'"),
])
def test_every_model_and_setting_is_checked_before_the_first_model_runs(tmp_path, monkeypatch, capsys, models,
                                                                        settings, message):
    """Exit status 2 and one error line, before any model runs (a model named twice ran twice, the second
    overwriting the first's result file; a missing config file was a traceback)."""
    from recbole_specgr import quick_start

    calls = []
    monkeypatch.setattr(quick_start, "run_recbole_specgr", lambda model, *a, **k: calls.append(model))
    status = compare.main(["--models", models, "--dataset", "ml-100k", *settings, "--out", str(tmp_path / "cmp")])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert status == 2 and len(errors) == 1 and re.search(message, errors[0]), errors
    assert calls == [] and list(tmp_path.iterdir()) == []


def test_tiger_with_an_unseen_share_is_labelled_tiger_c():
    tiger = {**SASREC, "model": "TIGER", "config": {"tiger_c_unseen_share": 0.0}}
    tiger_c = {**SASREC, "model": "TIGER", "config": {"tiger_c_unseen_share": 0.1}}
    assert [row[0] for row in compare.table_rows([tiger, tiger_c, SASREC])] == ["TIGER", "TIGER_C", "SASRec"]


def test_seed_table_averages_each_model_over_the_seeds_that_have_it(tmp_path):
    def with_recall(result, r50):
        return {**result, "test": {**result["test"], "overall": {**result["test"]["overall"], "recall@50": r50}}}

    by_seed = {2020: [with_recall(SASREC, 0.3), with_recall(UNISREC, 0.4)], 2021: [with_recall(SASREC, 0.5)]}
    md_path, csv_path = compare.write_seed_table(by_seed, str(tmp_path / "seeds"), made_by="python make.py")
    lines = open(md_path, encoding="utf-8").read().splitlines()
    assert lines[:3] == ["# test: mean ± std over seeds 2020, 2021", "", "Made by `python make.py`."]
    sasrec = next(line for line in lines if line.startswith("| SASRec |"))
    unisrec = next(line for line in lines if line.startswith("| UniSRec |"))
    # SASRec: seeds 2020 and 2021, R@50 mean 0.4, sample std 0.1414; UniSRec: seed 2020 only
    assert sasrec.split(" | ")[1] == "2" and "| 0.4000 ± 0.1414 |" in sasrec
    assert unisrec.split(" | ")[1] == "1" and "| 0.4000 ± – |" in unisrec  # one value: no spread, not ± 0.0000
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0][:4] == ["model", "seeds", "overall R@10 mean", "overall R@10 std"]
    assert rows[1][:2] == ["SASRec", "2"] and rows[2][:2] == ["UniSRec", "1"]
    assert rows[2][6:8] == ["0.400000", "–"]  # overall R@50 mean, std


def test_seed_table_cell_says_how_many_seeds_it_averages(tmp_path):
    def with_unseen_recall(r50):
        return {**SASREC, "test": {**SASREC["test"], "unseen": subset(0.0, 0.0, r50, 0.0, 20)}}

    # the metric is missing (None) in seed 2021: the mean is over 2 of the row's 3 seeds
    by_seed = {2020: [with_unseen_recall(0.1)], 2021: [with_unseen_recall(None)], 2022: [with_unseen_recall(0.3)]}
    md_path, _ = compare.write_seed_table(by_seed, str(tmp_path / "seeds"))
    cells = open(md_path, encoding="utf-8").read().splitlines()[-1].strip("| ").split(" | ")
    assert cells[1] == "3" and cells[12] == "0.2000 ± 0.1414 (n=2)" and cells[13] == "0.0000 ± 0.0000"


def test_tables_say_which_rows_started_from_other_runs_checkpoints(tmp_path):
    """Their train time counts that run alone (SpecGRAux loading its components, TIGER_C evaluating a TIGER)."""
    aux = {**UNISREC, "model": "SpecGRAux", "config": {"specgr_aux_verifier_checkpoint": "saved/T.pth",
                                                      "specgr_aux_drafter_checkpoint": "saved/U.pth"}}
    tiger_c = {**SASREC, "model": "TIGER", "config": {"tiger_c_unseen_share": 0.1, "init_checkpoint": "saved/T.pth"}}
    note = ("train time (s) counts each run's own training, not that of the checkpoints it started from: SpecGRAux "
            "(specgr_aux_verifier_checkpoint, specgr_aux_drafter_checkpoint); TIGER_C (init_checkpoint).")
    md_path, _ = compare.write_table([SASREC, aux, tiger_c], str(tmp_path / "one"))
    assert open(md_path, encoding="utf-8").read().splitlines()[-1] == note
    md_path, _ = compare.write_seed_table({2020: [SASREC, aux], 2021: [tiger_c]}, str(tmp_path / "seeds"))
    assert open(md_path, encoding="utf-8").read().splitlines()[-1] == note
    md_path, _ = compare.write_table([SASREC], str(tmp_path / "plain"))
    assert "counts each run's own training" not in open(md_path, encoding="utf-8").read()


def test_debug_shows_the_traceback_instead_of_the_error_line(tmp_path, monkeypatch):
    """As run_recbole_specgr.py's --debug (compare refused it as an unknown argument)."""
    from recbole_specgr import config

    with pytest.raises(ValueError, match=r"epochs: expected int"):
        compare.main(["--models", "SASRec", "--dataset", "ml-100k", "--epochs=abc", "--debug", "--out",
                      str(tmp_path / "cmp")])
    assert config.CONFIG_DICT_SOURCE == "config_dict"  # the command's label for its settings, undone after it
