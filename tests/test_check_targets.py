"""``benchmarks/check_targets.py``: issue 10's targets from a plan's result JSONs — each SpecGR++ row checked against
the baselines only (never against another SpecGR row), met or missed by the exact gap."""

import json

import pytest

from conftest import load_benchmark_script


@pytest.fixture(scope="module")
def check_targets():
    return load_benchmark_script("check_targets")


def result(overall_recall, overall_ndcg, unseen_recall, in_sample_recall=0.0):
    return {"test": {"overall": {"recall@50": overall_recall, "ndcg@10": overall_ndcg},
                     "unseen": {"recall@50": unseen_recall}, "in_sample": {"recall@50": in_sample_recall}},
            "learning_curve": []}


def test_each_candidate_is_checked_against_the_baselines_only(check_targets, tmp_path):
    rows = {
        "SASRec": result(0.30, 0.070, 0.000, 0.40),
        "UniSRec": result(0.31, 0.065, 0.034),
        "TextSim": result(0.08, 0.016, 0.048),
        "TIGER": result(0.29, 0.074, 0.000, 0.37),
        "SpecGRPP": result(0.35, 0.080, 0.020),
        "SpecGRPP_text": result(0.36, 0.060, 0.040),  # a variant: better than SpecGRPP, still not a baseline
        "SpecGRAux": result(0.50, 0.500, 0.500),  # ours too: would beat every candidate if taken for a baseline
    }
    out = tmp_path / "table"
    for name, row in rows.items():
        (tmp_path / f"table_{name}.json").write_text(json.dumps(row))

    check_targets.main(["--out", str(out), "--candidates", "SpecGRPP", "SpecGRPP_text"])
    text = (tmp_path / "table_targets.md").read_text()

    first, second = text.split("## SpecGRPP\n")[1].split("## SpecGRPP_text\n")
    assert "overall R@50: SpecGRPP 0.3500 ± 0.0000 (1 seed) vs the best baseline UniSRec 0.3100" in first
    assert "**met** (+0.0400)" in first
    assert "unseen R@50: SpecGRPP 0.0200 ± 0.0000 (1 seed) vs UniSRec 0.0340 ± 0.0000 (1 seed) — **missed** (-0.0140)" \
        in first
    assert "overall NDCG@10: SpecGRPP_text 0.0600 ± 0.0000 (1 seed) vs the best baseline TIGER 0.0740" in second
    assert "**missed** (-0.0140)" in second
    assert "vs UniSRec 0.0340 ± 0.0000 (1 seed) — **met** (+0.0060)" in second
    assert "in-sample R@50: TIGER 0.3700 ± 0.0000 (1 seed) vs SASRec 0.4000 ± 0.0000 (1 seed) (-0.0300)" in second


def test_every_unisrec_row_is_an_unseen_target(check_targets):
    """A longer-trained UniSRec row (another name, the same model) is checked like the plan's UniSRec row."""
    runs = {"UniSRec": [{**result(0.31, 0.065, 0.034), "model": "UniSRec"}],
            "UniSRec_30": [{**result(0.33, 0.068, 0.025), "model": "UniSRec"}],
            "SpecGRPP": [{**result(0.35, 0.080, 0.030), "model": "SpecGRPP"}]}
    unseen = [line for line in check_targets.check(runs) if line.startswith("- unseen")]
    assert unseen == [
        "- unseen R@50: SpecGRPP 0.0300 ± 0.0000 (1 seed) vs UniSRec 0.0340 ± 0.0000 (1 seed) — **missed** (-0.0040)",
        "- unseen R@50: SpecGRPP 0.0300 ± 0.0000 (1 seed) vs UniSRec_30 0.0250 ± 0.0000 (1 seed) — **met** (+0.0050)"]


def test_a_candidate_without_a_result_says_so(check_targets):
    assert check_targets.check({"SASRec": [result(0.3, 0.07, 0.0)]}, "SpecGRPP_text") == [
        "- SpecGRPP_text has no complete result yet: no target can be checked."]


def test_convergence_of_a_run_started_from_trained_weights(check_targets):
    run = {"config": {"epochs": 0, "specgrpp_finetune_epochs": 2}, "learning_curve": [
        {"epoch": -1, "stage": "init_checkpoint", "valid_speculative_score": 0.5036,
         "valid_speculative_metric": "recall@50"},
        {"epoch": 0, "stage": "finetune", "valid_score": 0.5054, "valid_metric": "recall@50"},
        {"epoch": 1, "stage": "finetune", "valid_score": 0.5101, "valid_metric": "recall@50"}]}
    assert check_targets.convergence(run) == (
        "init_checkpoint: speculative valid recall@50 0.5036; finetune: valid recall@50 by epoch: 0.5054, 0.5101; "
        "best at epoch 1 of 2 trained (ended by the last of 2 epochs); last validation +0.0047 over the one before")


def test_tiger_rows_are_named_by_the_user(check_targets, tmp_path, capsys):
    """``--tiger`` puts each named TIGER row's in-sample R@50 next to SASRec's; a name without a result is one
    error line naming the option and the run, and no report is written."""
    rows = {"SASRec": result(0.30, 0.070, 0.000, 0.40), "TIGER": result(0.29, 0.074, 0.000, 0.37),
            "TIGER_20": result(0.31, 0.080, 0.000, 0.388), "SpecGRPP": result(0.35, 0.080, 0.020)}
    for name, row in rows.items():
        (tmp_path / f"table_{name}.json").write_text(json.dumps(row))
    out = tmp_path / "table"

    check_targets.main(["--out", str(out), "--tiger", "TIGER", "TIGER_20"])
    text = (tmp_path / "table_targets.md").read_text()
    assert "in-sample R@50: TIGER 0.3700 ± 0.0000 (1 seed) vs SASRec 0.4000 ± 0.0000 (1 seed) (-0.0300)" in text
    assert "in-sample R@50: TIGER_20 0.3880 ± 0.0000 (1 seed) vs SASRec 0.4000 ± 0.0000 (1 seed) (-0.0120)" in text
    assert "- TIGER_20: no validation recorded" in text

    (tmp_path / "table_targets.md").unlink()
    with pytest.raises(SystemExit) as stopped:
        check_targets.main(["--out", str(out), "--tiger", "TIGER_30"])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert stopped.value.code == 2 and error.endswith(
        f"error: --tiger: no result JSON under {out}_ for TIGER_30 (runs with results: SASRec, SpecGRPP, TIGER, "
        f"TIGER_20)")
    assert not (tmp_path / "table_targets.md").exists()

    check_targets.main(["--out", str(out)])  # the default: the TIGER row only
    text = (tmp_path / "table_targets.md").read_text()
    assert "in-sample R@50: TIGER 0.3700" in text and "in-sample R@50: TIGER_20" not in text


def test_without_seeds_only_per_seed_files_are_left_out(check_targets, tmp_path):
    """A run whose name holds ``_s`` (``SASRec_short``) is a run; ``table_s2020_SASRec.json`` is a per-seed file."""
    for name in ("SASRec_short", "SpecGRPP", "s2020_SASRec"):
        (tmp_path / f"table_{name}.json").write_text(json.dumps(result(0.3, 0.07, 0.0)))
    assert sorted(check_targets.load_runs(str(tmp_path / "table"), None)) == ["SASRec_short", "SpecGRPP"]
    assert sorted(check_targets.load_runs(str(tmp_path / "table"), [2020])) == ["SASRec"]
