"""``benchmarks/run_table.py``: a plan's runs reference each other's checkpoints, a finished run is read back instead of
rerun, and a run killed mid-training continues from its progress file, which is gone once the result is written."""

import json
import re
from pathlib import Path

import pytest
import yaml

from conftest import load_benchmark_script
from recbole_specgr.trainer import InductiveTrainer


class Killed(Exception):
    """Stands for the process being killed."""


@pytest.fixture(scope="module")
def run_table():
    return load_benchmark_script("run_table")


def write_plan(folder, small_config):
    shared = {**small_config, "checkpoint_dir": str(folder / "saved"), "n_layers": 1, "hidden_size": 16,
              "inner_size": 16, "train_batch_size": 2048, "eval_step": 1, "stopping_step": 10}
    plan = {"dataset": "ml-100k", "shared": shared, "runs": [
        {"model": "SASRec", "config": {"epochs": 3}},
        # the SASRec above evaluated again as it is: its checkpoint passed by reference
        {"model": "SASRec", "name": "again", "config": {"init_checkpoint": "{SASRec}", "epochs": 0}},
    ]}
    path = folder / "plan.yaml"
    path.write_text(yaml.safe_dump(plan))
    return str(path)


@pytest.mark.parametrize("runs, message", [
    ([{"model": "SASRec"}, {"model": "Pop"}], r"model 'Pop': expected a sequential model"),
    ([{"model": "SASRec"}, {"model": "SASRec", "name": "later", "config": {"stoping_step": 2}}],
     r"stoping_step: no model or dataset has this setting \(from run later of the plan\); did you mean "
     r"'stopping_step'"),
    ([{"model": "SASRec"}, {"model": "SASRec", "name": "later", "config": {"init_checkpoint": "{NOPE}"}}],
     r"run later: init_checkpoint: \{NOPE\} names no earlier run of the plan \(earlier runs: \['SASRec'\]\)"),
    ([{"model": "SASRec", "config": {"init_checkpoint": "{later}"}}, {"model": "SASRec", "name": "later"}],
     r"run SASRec: init_checkpoint: \{later\} names no earlier run"),
    # a value only the run's Config refuses: found before SASRec trains, not when SpecGRPP's turn comes
    ([{"model": "SASRec", "config": {"topk": [20], "valid_metric": "Recall@20"}},
      {"model": "SpecGRPP", "config": {"topk": [20], "valid_metric": "Recall@20"}}],
     r"run SpecGRPP of the plan: specgr_threshold_tiebreak 'ndcg@10' \(default\): not computed with metrics"),
    ([{"model": "NoSuchRec"}], r"model 'NoSuchRec' is neither"),
], ids=["non-sequential-model", "misspelt-key", "unknown-reference", "later-reference", "refused-by-config",
      "unknown-model"])
def test_a_plan_that_cannot_run_stops_before_the_first_run_trains(run_table, small_config, run_dir, monkeypatch,
                                                                  capsys, runs, message):
    trained = []
    monkeypatch.setattr(run_table, "run_recbole_specgr", lambda *args, **kwargs: trained.append(args))
    plan = {"dataset": "ml-100k", "shared": {**small_config, "checkpoint_dir": str(run_dir / "saved")}, "runs": runs}
    (run_dir / "plan.yaml").write_text(yaml.safe_dump(plan))
    with pytest.raises(SystemExit) as stopped:
        run_table.main([str(run_dir / "plan.yaml"), "--out", str(run_dir / "table")])
    assert stopped.value.code == 2 and re.search(message, capsys.readouterr().err)
    assert trained == [] and not (run_dir / "saved").exists() and not list(run_dir.glob("table*"))


@pytest.mark.parametrize("content, message", [
    (None, r"missing\.yaml: expected a readable plan YAML \(\[Errno 2\] No such file"),
    ("runs: [model: SASRec\n", r"plan\.yaml: expected a readable plan YAML \(expected .,. or .\]., but got .<stream end>. "
                               r"\(line 2, column 1\)\)"),
], ids=["missing", "malformed"])
def test_a_plan_file_that_cannot_be_read_is_one_line(run_table, run_dir, capsys, content, message):
    path = run_dir / ("missing.yaml" if content is None else "plan.yaml")
    if content is not None:
        path.write_text(content)
    with pytest.raises(SystemExit) as stopped:
        run_table.main([str(path), "--out", str(run_dir / "table")])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and re.search(message, err) and "Traceback" not in err


@pytest.mark.parametrize("plan", sorted(Path(__file__).resolve().parents[1].glob("benchmarks/plans/*.yaml")),
                         ids=lambda path: path.name)
def test_every_committed_plan_names_known_models_and_keys(run_table, plan):
    loaded = yaml.safe_load(plan.read_text())
    assert len(run_table.check_plan(loaded, loaded.get("shared") or {})) >= 2


def test_a_killed_plan_resumes_its_run_and_reads_back_finished_ones(run_table, small_config, run_dir, monkeypatch):
    plan, out = write_plan(run_dir, small_config), str(run_dir / "table")
    trained = []
    real = InductiveTrainer._epoch_starts

    def dies_at_epoch_2(self, epoch_idx):
        real(self, epoch_idx)
        trained.append(epoch_idx)
        if epoch_idx == 2 and len(trained) == 3:
            raise Killed

    monkeypatch.setattr(InductiveTrainer, "_epoch_starts", dies_at_epoch_2)
    with pytest.raises(Killed):
        run_table.main([plan, "--out", out])
    assert Path(f"{out}_SASRec.progress.pth").exists() and not Path(f"{out}_SASRec.json").exists()

    run_table.main([plan, "--out", out])  # the same command again
    assert trained == [0, 1, 2, 2]  # epoch 2 again (it was killed), not 0 and 1
    sasrec = json.loads(Path(f"{out}_SASRec.json").read_text())
    again = json.loads(Path(f"{out}_again.json").read_text())
    assert [c["epoch"] for c in sasrec["learning_curve"]] == [0, 1, 2]
    assert again["config"]["init_checkpoint"] == sasrec["checkpoint"] and again["test"] == sasrec["test"]
    assert not list(run_dir.glob("*.progress.pth"))  # results written: nothing left to resume
    table = Path(f"{out}.md").read_text()
    assert "| SASRec |" in table and "| again |" in table

    trained.clear()
    run_table.main([plan, "--out", out, "--only", "again"])  # finished runs are read back, not rerun
    assert trained == []
    # the table states the command that makes all of it (--only chooses what one call trains, not what it shows)
    assert Path(f"{out}.md").read_text().splitlines()[2] == f"Made by `python benchmarks/run_table.py {plan} --out {out}`."


def test_two_runs_with_one_name_are_refused_before_any_run_trains(run_table, run_dir, monkeypatch, capsys):
    trained = []
    monkeypatch.setattr(run_table, "run_recbole_specgr", lambda *args, **kwargs: trained.append(args))
    # the second TIGER would share <out>_TIGER.json with the first and be read back instead of trained
    plan = {"dataset": "ml-100k",
            "runs": [{"model": "TIGER"}, {"model": "TIGER", "config": {"tiger_c_unseen_share": 0.1}}]}
    (run_dir / "plan.yaml").write_text(yaml.safe_dump(plan))
    with pytest.raises(SystemExit):
        run_table.main([str(run_dir / "plan.yaml"), "--out", str(run_dir / "table")])
    error = capsys.readouterr().err
    assert f"{run_dir / 'plan.yaml'}: more than one run is named 'TIGER'" in error and "its own `name:`" in error
    with pytest.raises(ValueError, match="more than one run is named 'TIGER'"):
        run_table.run_plan(plan, {}, str(run_dir / "table"))
    assert trained == [] and not list(run_dir.glob("table*"))


def test_only_with_no_names_writes_the_table_from_the_jsons_and_trains_nothing(run_table, run_dir, monkeypatch):
    monkeypatch.setattr(run_table, "run_recbole_specgr", lambda *args, **kwargs: pytest.fail("a run trained"))
    result = {"model": "SASRec", "test": {"overall": {"recall@50": 0.3}}}
    (run_dir / "table_SASRec.json").write_text(json.dumps(result))
    plan = {"dataset": "ml-100k", "runs": [{"model": "SASRec"}, {"model": "TIGER"}]}  # TIGER: no result yet
    (run_dir / "plan.yaml").write_text(yaml.safe_dump(plan))
    run_table.main([str(run_dir / "plan.yaml"), "--out", str(run_dir / "table"), "--only"])
    header, _, row = (run_dir / "table.md").read_text().splitlines()[-3:]  # the only row, under its header
    assert header == "| model | overall R@50 | in-sample R@50 | unseen R@50 | #params | train time (s) |"  # what it holds
    assert row == "| SASRec | 0.3000 | – | – | – | – |"


@pytest.mark.parametrize("shared, runs, message", [
    ([1, 2], [{"model": "SASRec"}], r"expected a mapping with 'dataset' .* 'shared' \(a mapping of settings\)"),
    ({}, [{"model": "SASRec", "config": [1]}], r"expected a mapping with 'dataset' .*'runs' \(a list of"),
], ids=["shared-a-list", "config-a-list"])
def test_a_plan_of_the_wrong_shape_is_one_line(run_table, run_dir, capsys, shared, runs, message):
    (run_dir / "plan.yaml").write_text(yaml.safe_dump({"dataset": "ml-100k", "shared": shared, "runs": runs}))
    with pytest.raises(SystemExit) as stopped:
        run_table.main([str(run_dir / "plan.yaml"), "--out", str(run_dir / "table")])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and re.search(message, err) and "Traceback" not in err, err


def test_a_misspelt_set_key_is_named_before_any_run_trains(run_table, small_config, run_dir, monkeypatch, capsys):
    trained = []
    monkeypatch.setattr(run_table, "run_recbole_specgr", lambda *args, **kwargs: trained.append(args))
    (run_dir / "plan.yaml").write_text(yaml.safe_dump({"dataset": "ml-100k", "shared": small_config,
                                                       "runs": [{"model": "SASRec"}, {"model": "FDSA"}]}))
    with pytest.raises(SystemExit) as stopped:
        run_table.main([str(run_dir / "plan.yaml"), "--out", str(run_dir / "table"), "--set", "epoch=5"])
    assert stopped.value.code == 2 and "epoch: no model or dataset has this setting" in capsys.readouterr().err
    assert trained == []
