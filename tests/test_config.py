"""Config layering, the plugin registry and the shipped YAML files."""

import sys

import pytest
import yaml

import recbole_specgr.config as config_module
from recbole_specgr.config import PROPERTIES_DIR, Config
from recbole_specgr.utils import get_model, get_trainer, plugin_model_names


@pytest.fixture
def layered_properties(tmp_path, monkeypatch):
    """A properties folder where every layer sets ``probe_*`` keys, each layer overriding the previous one."""
    (tmp_path / "dataset").mkdir()
    (tmp_path / "model").mkdir()
    layers = {
        "overall.yaml": {"probe_a": "overall", "probe_b": "overall", "probe_c": "overall", "probe_d": "overall",
                         "probe_e": "overall", "probe_f": "overall", "MAX_ITEM_LIST_LENGTH": 7,
                         "train_neg_sample_args": None, "valid_metric": "Recall@10"},
        "dataset/tiny.yaml": {"probe_b": "dataset", "probe_c": "dataset", "probe_d": "dataset", "probe_e": "dataset",
                              "probe_f": "dataset"},
        "model/SASRec.yaml": {"probe_c": "model", "probe_d": "model", "probe_e": "model", "probe_f": "model"},
    }
    for name, content in layers.items():
        (tmp_path / name).write_text(yaml.safe_dump(content))
    user = tmp_path / "user.yaml"
    user.write_text(yaml.safe_dump({"probe_d": "user", "probe_e": "user", "probe_f": "user"}))
    monkeypatch.setattr(config_module, "PROPERTIES_DIR", tmp_path)
    return str(user)


def test_layers_override_in_documented_order(layered_properties, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["prog", "--probe_f=cmdline"])
    config = Config(model="SASRec", dataset="tiny", config_file_list=[layered_properties],
                    config_dict={"probe_e": "dict"})
    assert [config[f"probe_{c}"] for c in "abcdef"] == ["overall", "dataset", "model", "user", "dict", "cmdline"]
    assert config["MAX_ITEM_LIST_LENGTH"] == 7  # our overall.yaml beats RecBole's own default (50)
    assert config["n_layers"] == 2  # RecBole's SASRec.yaml is the lowest layer and still applies


def test_shipped_yaml_files_parse_and_use_known_models():
    files = sorted(PROPERTIES_DIR.rglob("*.yaml"))
    assert PROPERTIES_DIR.joinpath("overall.yaml") in files
    for path in files:
        content = yaml.safe_load(path.read_text())
        if path.parent.name == "model":
            get_model(path.stem)  # every model YAML names a resolvable model
            assert content is None or isinstance(content, dict), path  # RQVAE.yaml holds only comments
            # semantic IDs belong to the dataset: a model-level rqvae_* key would give TIGER and SpecGR different IDs
            assert not [key for key in content or {} if key.startswith("rqvae_")], path
        else:
            assert isinstance(content, dict) and content, path


def test_every_semantic_id_model_of_a_dataset_reads_the_same_tokenizer_keys(run_dir):
    settings = {}
    for model in ("RQVAE", "TIGER", "SpecGRPP", "SpecGRAux"):
        config = Config(model=model, dataset="ml-100k")
        settings[model] = {key: config[key] for key in config.final_config_dict if key.startswith("rqvae_")}
    assert settings["TIGER"]["rqvae_codebook_size"] == 16  # properties/dataset/ml-100k.yaml beats overall.yaml's 256
    assert len(settings["TIGER"]) == 10
    assert all(value == settings["TIGER"] for value in settings.values()), settings


def test_registry_finds_plugin_models_first_and_falls_back_to_recbole():
    from recbole.model.sequential_recommender.sasrec import SASRec

    assert get_model("SASRec") is SASRec
    for name in plugin_model_names():
        assert get_model(name).__name__ == name
        assert get_model(name).__module__.startswith("recbole_specgr.")


def test_only_sequential_models_pass_the_inductive_split_check():
    from recbole_specgr.utils import check_sequential_model

    for name in plugin_model_names() + ["SASRec", "FDSA", "S3Rec", "GRU4Rec"]:  # RQVAE included (it fits the IDs)
        check_sequential_model(name)
    for name, kind in (("Pop", "traditional"), ("BPR", "general"), ("FM", "context")):
        with pytest.raises(ValueError, match=rf"model '{name}': expected a sequential model .* got a {kind} "):
            check_sequential_model(name)


def test_a_checkpoint_of_another_split_names_what_differs(run_dir):
    import torch

    from recbole_specgr.config import check_same_split, plain_config

    config = Config(model="TIGER", dataset="ml-100k")
    seen = torch.tensor([False, True, True, False])
    same = {"config": plain_config(config), "state_dict": {"seen_item_mask": seen, "item2codes": torch.zeros(4, 3)}}
    check_same_split("init_checkpoint", "a.pth", same, config, seen)  # other semantic IDs alone: the model's business
    other = {"config": {**plain_config(config), "split_time_quantiles": [0.95, 0.97]},
             "state_dict": {"seen_item_mask": torch.tensor([False, True, True, True])}}
    with pytest.raises(ValueError, match=r"^init_checkpoint: a\.pth was trained on another split \("
                                         r"split_time_quantiles \[0\.95, 0\.97\] there, \[0\.8, 0\.9\] here; "
                                         r"seen_item_mask differs\)"):
        check_same_split("init_checkpoint", "a.pth", other, config, seen)
    by_time = Config(model="TIGER", dataset="ml-100k", config_dict={"split_timestamps": [5, 8]})
    other["config"]["split_timestamps"] = [5.0, 8.0]  # cut-offs on both sides: the quantiles are not used
    other["state_dict"]["seen_item_mask"] = seen
    check_same_split("init_checkpoint", "a.pth", other, by_time, seen)
    spaced = {**same, "config": {**plain_config(config), "cold_start_items": "release_year>=1997"}}
    check_same_split("init_checkpoint", "a.pth", spaced, config, seen)  # the same query, spaced otherwise
    later = {**same, "config": {**plain_config(config), "cold_start_items": "release_year >= 1998"}}
    with pytest.raises(ValueError, match=r"cold_start_items 'release_year >= 1998' there, 'release_year >= 1997' here"):
        check_same_split("init_checkpoint", "a.pth", later, config, seen)


def test_unknown_model_is_a_clear_error():
    with pytest.raises(ValueError, match=r"model 'NoSuchRec' is neither a recbole-specgr model"):
        get_model("NoSuchRec")


def test_trainer_lookup():
    from recbole.utils import ModelType

    from recbole_specgr.trainer import InductiveTrainer

    assert get_trainer(ModelType.SEQUENTIAL, "SASRec") is InductiveTrainer


def test_unknown_dataset_without_files_is_a_clear_error(run_dir, tmp_path):
    from recbole_specgr.utils import create_dataset

    config = Config(model="SASRec", dataset="nowhere", config_dict={"data_path": str(tmp_path), "state": "ERROR"})
    with pytest.raises(ValueError, match=r"dataset 'nowhere': no 'nowhere.inter'"):
        create_dataset(config)


def test_compat_keeps_autograd_anomaly_detection_off():
    import torch
    from recbole.model.sequential_recommender.sine import SINE  # noqa: F401  (the module that switches it on)

    assert not torch.is_anomaly_enabled()


def test_saved_plain_config_rebuilds_the_same_settings(run_dir, tmp_path):
    from recbole_specgr.config import config_from_saved, plain_config

    original = Config(model="SpecGRPP", dataset="ml-100k",
                      config_dict={"epochs": 3, "specgr_threshold": -4.5, "data_path": str(tmp_path)})
    saved = plain_config(original)
    assert "device" not in saved and "local_rank" not in saved  # derived and process keys are not saved
    rebuilt = config_from_saved(saved, eval_batch_size=7)
    assert rebuilt["epochs"] == 3 and rebuilt["specgr_threshold"] == -4.5 and rebuilt["eval_batch_size"] == 7
    assert rebuilt["data_path"] == original["data_path"]  # not ml-100k/ml-100k
    same = {k: v for k, v in plain_config(rebuilt).items() if k != "eval_batch_size"}
    assert same == {k: v for k, v in saved.items() if k != "eval_batch_size"}


def test_a_checkpoint_saved_before_a_key_existed_keeps_its_behaviour(run_dir, tmp_path):
    from recbole_specgr.config import KEYS_ADDED_LATER, config_from_saved, plain_config

    saved = plain_config(Config(model="SpecGRPP", dataset="ml-100k", config_dict={"data_path": str(tmp_path)}))
    assert saved["specgr_rank_all_unseen"] is True  # today's default
    assert config_from_saved(saved)["specgr_rank_all_unseen"] is True
    older = {k: v for k, v in saved.items() if k not in KEYS_ADDED_LATER}
    assert config_from_saved(older)["specgr_rank_all_unseen"] is False  # as the checkpoint was evaluated
    assert config_from_saved(older, specgr_rank_all_unseen=True)["specgr_rank_all_unseen"] is True


def test_a_paper_ranking_checkpoint_rebuilds_when_the_joint_grids_defaults_change(run_dir, tmp_path):
    from recbole_specgr.config import config_from_saved, plain_config

    saved = plain_config(Config(model="SpecGRPP", dataset="ml-100k", config_dict={
        "data_path": str(tmp_path), "specgr_draft_weight_grid": [0]}))
    saved["specgr_unseen_score_grid"] = [-2.0, -1.75]  # an older default, never tried with α = 0
    rebuilt = config_from_saved(saved)  # not refused as an unused grid
    assert rebuilt["specgr_draft_weight_grid"] == [0]
    assert rebuilt["specgr_unseen_score_grid"] == Config(model="SpecGRPP", dataset="ml-100k")["specgr_unseen_score_grid"]
    joint = config_from_saved({**saved, "specgr_draft_weight_grid": [0, 1]})  # tried there: kept
    assert joint["specgr_unseen_score_grid"] == [-2.0, -1.75]
    retuned = config_from_saved(saved, specgr_draft_weight_grid=[0, 1])  # tried from now on: kept as saved
    assert retuned["specgr_unseen_score_grid"] == [-2.0, -1.75]


def test_model_yaml_layers_its_base_configs():
    defaults = config_module.model_defaults("SpecGRPP")
    base = yaml.safe_load((PROPERTIES_DIR / "model" / "base" / "t5.yaml").read_text())
    assert defaults["hidden_size"] == base["hidden_size"] and base["item_text_input"] is False
    assert defaults["item_text_input"] is True  # the model file overrides its base
    assert config_module.model_defaults("SpecGRAux")["specgr_no_reranking"] is False  # from base/speculative.yaml


def test_values_that_turn_a_feature_off_are_still_accepted(tmp_path):
    """The range checks refuse impossible values only: clip_grad_norm {} (no clipping, e.g. to undo TIGER's) and
    rqvae_hidden_sizes [] (a linear RQ-VAE encoder) mean something; topk [] does not."""
    config = Config(model="TIGER", dataset="ml-100k", config_dict={"data_path": str(tmp_path), "clip_grad_norm": {},
                                                                    "rqvae_hidden_sizes": []})
    assert config["clip_grad_norm"] == {} and config["rqvae_hidden_sizes"] == []
    with pytest.raises(ValueError, match=r"topk: expected a non-empty list of ints >= 1, got \[\]"):
        Config(model="TIGER", dataset="ml-100k", config_dict={"data_path": str(tmp_path), "topk": []})


@pytest.mark.parametrize("key", ["cache_dir", "checkpoint_dir"])
def test_an_empty_folder_setting_is_refused(tmp_path, key):
    """An empty cache_dir wrote the semantic IDs into the working directory; an empty checkpoint_dir failed with a
    bare FileNotFoundError naming ''."""
    with pytest.raises(ValueError, match=rf"{key}: expected a folder path, got '' from config_dict"):
        Config(model="TIGER", dataset="ml-100k", config_dict={"data_path": str(tmp_path), key: ""})


@pytest.mark.parametrize("model, settings, message", [
    # valid_metric's default is Recall@50: a run that asks for NDCG alone must choose its selection metric too
    ("SASRec", {"metrics": ["NDCG"]},
     r"^valid_metric 'Recall@50' \(default\): not computed with metrics \['ndcg'\] and topk \[10, 50\]; expected one "
     r"of \['ndcg@10', 'ndcg@50'\] \(optionally prefixed in_sample/ or unseen/\)$"),
    # a new topk leaves two of SpecGR++'s defaults at cut-offs no longer computed: both named in one line
    ("SpecGRPP", {"topk": [20]},
     r"^valid_metric 'Recall@50' \(default\); specgr_threshold_tiebreak 'ndcg@10' \(default\): not computed with "
     r"metrics \['recall', 'ndcg'\] and topk \[20\]"),
    ("SpecGRPP", {"valid_metric": "Recall@50", "specgr_threshold_floors": {"unseen/recall@20": 0.1}},
     r"^specgr_threshold_floors 'unseen/recall@20' from config_dict: not computed"),
    ("SpecGRPP", {"metrics": ["Recall"], "specgrpp_pretrain_valid_metric": "NDCG@50", "specgr_threshold_tiebreak": "MRR@10"},
     r"^specgr_threshold_tiebreak 'MRR@10' from config_dict; specgrpp_pretrain_valid_metric 'NDCG@50' from "
     r"config_dict: not computed with metrics \['recall'\]"),
])
def test_selection_metrics_must_be_among_the_computed_results(tmp_path, model, settings, message):
    """Found with the config: the trainer found them after the dataset, text embeddings and semantic IDs were built."""
    with pytest.raises(ValueError, match=message):
        Config(model=model, dataset="ml-100k", config_dict={"data_path": str(tmp_path), **settings})


def test_ndcg_alone_is_a_valid_setting_and_speculative_selection_follows_valid_metric(tmp_path):
    config = Config(model="SpecGRPP", dataset="ml-100k",
                    config_dict={"data_path": str(tmp_path), "metrics": ["NDCG"], "valid_metric": "NDCG@50",
                                 "specgr_threshold_tiebreak": None})
    assert config["specgrpp_pretrain_valid_metric"] is None  # stage 1 is selected by valid_metric


@pytest.mark.parametrize("model, settings, message", [
    ("SASRec", {"lr_scheduler": "exponential"},
     r"^lr_scheduler: expected one of constant, linear, cosine, got 'exponential' from config_dict$"),
    ("SASRec", {"lr_min_ratio": 2}, r"^lr_min_ratio: expected a number in \[0, 1\], got 2 from config_dict$"),
    ("SASRec", {"warmup_steps": 10, "scheduler_total_steps": 5},
     r"^scheduler_total_steps: expected an int > warmup_steps \(10\) or ~, got 5 from config_dict$"),
    ("SpecGRPP", {"specgrpp_finetune_warmup_steps": 300, "specgrpp_finetune_total_steps": 300},
     r"^specgrpp_finetune_total_steps: expected an int > specgrpp_finetune_warmup_steps \(300\) or ~, got 300 from "),
    ("SpecGRPP", {"specgr_drafting_backend": "annoy"}, r"^specgr_drafting_backend: expected one of dense, faiss, got"),
    ("SpecGRPP", {"specgr_faiss_index": "lsh"}, r"^specgr_faiss_index: expected one of flat, hnsw, ivf, got 'lsh'"),
    ("TIGER", {"rqvae_method": "kmeans"}, r"^rqvae_method: expected one of rqvae, faiss_rq, got 'kmeans'"),
    ("S3Rec", {"train_stage": "foo"}, r"^train_stage: expected one of pretrain, finetune, got 'foo' from config_dict$"),
    ("FDSA", {"pooling_mode": "median"}, r"^pooling_mode: expected one of mean, max, sum, got 'median'"),
    ("S3Rec", {"train_stage": "finetune"},
     r"^pre_model_path: train_stage: finetune starts from a pre-trained S3Rec checkpoint; expected an existing file, "
     r"got '' \(or train_stage: pretrain, which runs both stages in one run\)$"),
    ("SpecGRPP", {"item_text_input": False},
     r"^specgr_text_weight_grid: \[1, 2\] needs the item texts of the text prior, which this SpecGRPP does not keep"),
])
def test_settings_the_trainer_or_model_refused_late_are_refused_with_the_config(tmp_path, model, settings, message):
    """Each was refused only once the model or trainer was built (after the text embeddings and the semantic IDs),
    or by a bare AssertionError inside RecBole (train_stage, pooling_mode)."""
    with pytest.raises(ValueError, match=message):
        Config(model=model, dataset="ml-100k", config_dict={"data_path": str(tmp_path), **settings})



@pytest.mark.parametrize("settings, message", [
    ({"topk": 10}, r"^valid_metric 'Recall@50' \(default\): not computed with metrics \['recall', 'ndcg'\] and topk "
                   r"\[10\]"),  # RecBole reads topk: 10 as [10], after this check
    ({"valid_metric": None}, r"^valid_metric: expected a result key such as Recall@50, got ~ from config_dict$"),
    ({"metrics": []}, r"^metrics: expected a list of Recall and NDCG"),
    ({"item_text_input": False, "specgr_text_weight_grid": None, "specgr_text_weight": 1.0},
     r"^specgr_text_weight: 1\.0 needs the item texts of the text prior, which this SpecGRPP does not keep "
     r"\(SpecGRPP: item_text_input: True\); set it to 0 from config_dict$"),
])
def test_more_metric_and_text_settings_refused_with_the_config(tmp_path, settings, message):
    with pytest.raises(ValueError, match=message):
        Config(model="SpecGRPP", dataset="ml-100k", config_dict={"data_path": str(tmp_path), **settings})


def test_gamma_selection_keys_are_checked_only_where_gamma_is_chosen(tmp_path):
    """The trainer reads specgr_threshold_metric / tiebreak only with a grid: without one, SpecGR++'s default
    tiebreak (ndcg@10) does not have to be computed."""
    no_grid = {key: None for key in ("specgr_threshold_grid", "specgr_draft_weight_grid", "specgr_unseen_score_grid",
                                     "specgr_text_weight_grid", "specgr_novelty_weight_grid")}
    settings = {"data_path": str(tmp_path), "metrics": ["Recall"]}
    config = Config(model="SpecGRPP", dataset="ml-100k", config_dict={**settings, **no_grid})
    assert config["specgr_threshold_tiebreak"] == "ndcg@10"
    with pytest.raises(ValueError, match=r"^specgr_threshold_tiebreak 'ndcg@10' \(default\): not computed with "
                                         r"metrics \['recall'\]"):
        Config(model="SpecGRPP", dataset="ml-100k", config_dict=settings)


def test_a_bracketed_list_of_names_on_the_command_line_is_a_list(tmp_path, monkeypatch):
    """--text_fields=[title,year] stayed the text '[title,year]' (only Python literals were read); RecBole's interval
    syntax and config_dict's text stay text."""
    monkeypatch.setattr(sys, "argv", ["prog", "--text_fields=[title, 'year']", "--topk=[5,10]",
                                      "--cold_start_items=year>=1999", "--user_inter_num_interval=[1,inf]"])
    config = Config(model="SASRec", dataset="ml-100k",
                    config_dict={"data_path": str(tmp_path), "valid_metric": "Recall@10", "checkpoint_dir": "[exp]"})
    assert config["text_fields"] == ["title", "year"] and config["topk"] == [5, 10]
    assert config["cold_start_items"] == "year>=1999" and config["user_inter_num_interval"] == "[1,inf]"
    assert config["checkpoint_dir"] == "[exp]"
