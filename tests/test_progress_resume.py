"""``progress_file``: a training run killed between epochs continues where it stopped and ends with exactly the
weights, learning curve and test result of an uninterrupted run; a finished run trains nothing; a file that does not
belong to the run is refused in one line."""

import os

import pytest
import torch

from recbole_specgr import compat
from recbole_specgr.quick_start import objective_function
from recbole_specgr.trainer import InductiveTrainer


class Killed(Exception):
    """Stands for the process being killed."""


def sasrec_config(small_config, tmp_path, name):
    return {**small_config, "model": "SASRec", "dataset": "ml-100k", "epochs": 3, "eval_step": 1,
            "stopping_step": 10, "train_batch_size": 2048, "learning_rate": 0.01, "lr_scheduler": "cosine",
            "warmup_steps": 2, "lr_min_ratio": 0.1, "clip_grad_norm": {"max_norm": 1.0}, "n_layers": 1,
            "hidden_size": 16, "inner_size": 16, "hidden_dropout_prob": 0.3, "attn_dropout_prob": 0.3,
            "progress_file": str(tmp_path / f"{name}.progress.pth"), "checkpoint_dir": str(tmp_path / name)}


def final_weights(result):
    return compat.load_checkpoint(result["checkpoint"])["state_dict"]


def kill_at_epoch(monkeypatch, kill_epoch):
    """Make the trainer die at the start of ``kill_epoch``, after it has recorded the epochs before."""
    real = InductiveTrainer._epoch_starts

    def epoch_starts(self, epoch_idx):
        real(self, epoch_idx)
        if epoch_idx == kill_epoch:
            raise Killed

    monkeypatch.setattr(InductiveTrainer, "_epoch_starts", epoch_starts)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, ml100k_slice, session_cache):
    folder = tmp_path_factory.mktemp("uninterrupted")
    small = {"data_path": ml100k_slice, "cache_dir": session_cache, "state": "ERROR", "show_progress": False,
             "eval_batch_size": 512, "seed": 2020}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        mp.setattr("sys.argv", ["pytest"])
        return objective_function(sasrec_config(small, folder, "whole"))


@pytest.mark.parametrize("kill_epoch", [1, 2])
def test_a_killed_run_resumes_to_exactly_the_uninterrupted_result(small_config, run_dir, uninterrupted, monkeypatch,
                                                                  kill_epoch):
    config = sasrec_config(small_config, run_dir, "killed")
    with monkeypatch.context() as mp:
        kill_at_epoch(mp, kill_epoch)
        with pytest.raises(Killed):
            objective_function(config)
    progress = compat.load_checkpoint(config["progress_file"])
    assert progress["epoch"] == kill_epoch - 1 and not progress["progress"]["done"]

    trained = []
    real_train_epoch = InductiveTrainer._train_epoch
    monkeypatch.setattr(InductiveTrainer, "_train_epoch",
                        lambda self, data, epoch_idx, **kw: trained.append(epoch_idx)
                        or real_train_epoch(self, data, epoch_idx, **kw))
    resumed = objective_function(config)

    assert trained == list(range(kill_epoch, 3))  # only the epochs the killed process had not finished
    assert resumed["learning_curve"] == uninterrupted["learning_curve"]  # steps, lr, losses, validations
    assert resumed["test"] == uninterrupted["test"] and resumed["valid"] == uninterrupted["valid"]
    whole, again = final_weights(uninterrupted), final_weights(resumed)
    assert whole.keys() == again.keys() and all(torch.equal(whole[k], again[k]) for k in whole)
    assert compat.load_checkpoint(config["progress_file"])["progress"]["done"]
    assert resumed["train_time_s"] > 0


def test_resume_checkpoint_continues_the_schedule_of_the_whole_run(small_config, run_dir, uninterrupted, monkeypatch):
    """RecBole's ``resume_checkpoint`` on the best checkpoint of a run killed after epoch 0: epochs 1 and 2 end at
    the optimizer steps and learning rates of the uninterrupted run (the schedule spans all 3 epochs, not the 2
    left)."""
    config = {**sasrec_config(small_config, run_dir, "checkpoint"), "progress_file": None}
    with monkeypatch.context() as mp:
        kill_at_epoch(mp, 1)
        with pytest.raises(Killed):
            objective_function(config)
    [checkpoint] = [str(path) for path in (run_dir / "checkpoint").iterdir()]
    assert compat.load_checkpoint(checkpoint)["epoch"] == 0
    real_fit = InductiveTrainer.fit

    def resumed_fit(self, *args, **kwargs):
        self.resume_checkpoint(checkpoint)
        return real_fit(self, *args, **kwargs)

    monkeypatch.setattr(InductiveTrainer, "fit", resumed_fit)
    resumed = objective_function(config)["learning_curve"]
    expected = uninterrupted["learning_curve"][1:]
    assert [c["lr"] for c in resumed] == pytest.approx([c["lr"] for c in expected], rel=1e-12)
    assert [(c["epoch"], c["step"]) for c in resumed] == [(c["epoch"], c["step"]) for c in expected]
    assert resumed[0]["lr"] > 0.01 * 0.1 * 1.5  # epoch 1 ends mid-decay, well above the floor


def test_a_progress_file_of_the_previous_format_continues_the_schedule_of_the_whole_run(small_config, run_dir,
                                                                                      uninterrupted, monkeypatch):
    """Progress files written before e954148 keep global_step and fit_first_epoch in their ``progress`` meta only (a
    run_table lane spans sessions and code versions): resumed, they follow the uninterrupted schedule too."""
    config = sasrec_config(small_config, run_dir, "old_format")
    with monkeypatch.context() as mp:
        kill_at_epoch(mp, 1)
        with pytest.raises(Killed):
            objective_function(config)
    state = torch.load(config["progress_file"], weights_only=False)
    state["progress"]["global_step"] = state.pop("global_step")
    state["progress"]["fit_first_epoch"] = state.pop("fit_first_epoch")
    torch.save(state, config["progress_file"])
    resumed = objective_function(config)["learning_curve"]
    assert [(c["step"], c["lr"]) for c in resumed] == [(c["step"], c["lr"]) for c in uninterrupted["learning_curve"]]


def test_a_finished_run_trains_nothing_and_gives_the_same_result(small_config, run_dir, uninterrupted, monkeypatch):
    config = sasrec_config(small_config, run_dir, "finished")
    first = objective_function(config)
    monkeypatch.setattr(InductiveTrainer, "_train_epoch", lambda *a, **k: pytest.fail("trained again"))
    again = objective_function(config)
    assert again["test"] == first["test"] == uninterrupted["test"]
    assert again["learning_curve"] == first["learning_curve"] and again["checkpoint"] == first["checkpoint"]
    # the first process's training time is carried over (the progress file records it a few ms before that process
    # stops its own clock, and this process adds the moment it takes to see the run is finished)
    recorded = compat.load_checkpoint(config["progress_file"])["progress"]["train_time_s"]
    assert recorded <= first["train_time_s"] + 1e-3 and recorded - 1e-3 <= again["train_time_s"] <= recorded + 0.5


def test_a_progress_file_of_another_run_is_refused(small_config, run_dir, monkeypatch):
    config = sasrec_config(small_config, run_dir, "other")
    with monkeypatch.context() as mp:
        kill_at_epoch(mp, 1)
        with pytest.raises(Killed):
            objective_function(config)
    with pytest.raises(ValueError, match=r"progress_file: .*other\.progress\.pth is the progress of a run with "
                                         r"seed = 2020, this run has 7"):
        objective_function({**config, "seed": 7})
    with pytest.raises(ValueError, match=r"progress_file: .* is the progress of a run with model = 'SASRec'"):
        objective_function({**config, "model": "GRU4Rec"})
    # its weights were trained on another split's rows: resumed, it reported test results of another split's model
    with pytest.raises(ValueError, match=r"^progress_file: .*other\.progress\.pth was trained on another split "
                                         r"\(split_time_quantiles \[0\.8, 0\.9\] there, \[0\.7, 0\.9\] here"):
        objective_function({**config, "split_time_quantiles": [0.7, 0.9]})
    # a model of other sizes: a traceback of dozens of size-mismatch lines
    with pytest.raises(ValueError, match=r"^progress_file: .*other\.progress\.pth does not fit this SASRec \(size "
                                         r"mismatch for item_embedding\.weight: .*\); delete it to start over"):
        objective_function({**config, "hidden_size": 32, "inner_size": 32})
    os.remove(compat.load_checkpoint(config["progress_file"])["progress"]["saved_model_file"])
    with pytest.raises(ValueError, match=r"progress_file: .* continues a run whose best checkpoint .* is gone"):
        objective_function(config)


def test_a_file_that_is_no_progress_file_is_refused(small_config, run_dir, uninterrupted):
    config = sasrec_config(small_config, run_dir, "plain")
    config["progress_file"] = uninterrupted["checkpoint"]  # a best-model checkpoint, not a progress file
    with pytest.raises(ValueError, match=r"progress_file: .* is not a progress file \(no 'progress' entry\)"):
        objective_function(config)


def test_trainers_started_in_the_same_second_get_their_own_checkpoint_files(tmp_path):
    """RecBole names a checkpoint by the second it was created in: two runs started together (the seeds of a
    benchmark table) wrote one file. The name now carries the process id, and a count within a process."""
    import subprocess
    import sys as system

    from recbole_specgr.trainer import inductive_trainer

    names = [inductive_trainer.unique_checkpoint_name(str(tmp_path / "SASRec-Dec-06-2026_13-28-02.pth"))
             for _ in range(2)]
    code = ("import sys; from recbole_specgr.trainer.inductive_trainer import unique_checkpoint_name as u; "
            "print(u(sys.argv[1]))")
    other = subprocess.run([system.executable, "-c", code, str(tmp_path / "SASRec-Dec-06-2026_13-28-02.pth")],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert len({*names, other}) == 3
    assert all(n.startswith(str(tmp_path / "SASRec-Dec-06-2026_13-28-02-")) and n.endswith(".pth")
               for n in (*names, other))
