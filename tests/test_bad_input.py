"""Bad input, one table per family: each case ends with one clear error naming the file / key and what was expected,
and leaves nothing half-written in the cache or checkpoint folders.

Families: malformed atomic files (read through RecBole's loading path as patched by compat), and user mistakes on
the command line of ``run_recbole_specgr.py`` (exit status 2, one ``error:`` line, no traceback).
"""

import os
import re
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from recbole_specgr.config import Config
from recbole_specgr.data.dataset import InductiveSequentialDataset

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import run_recbole_specgr  # noqa: E402

TINY = Path(__file__).resolve().parent / "fixtures" / "tiny"


def files_under(folder):
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*") if p.is_file()) \
        if os.path.isdir(folder) else []


def edit(text, old, new):
    assert old in text
    return text.replace(old, new)


@pytest.mark.parametrize(
    "which, mutate, message",
    [
        ("inter", lambda t: "", r"tiny\.inter: empty file, expected a header line of 'name:type' columns"),
        ("inter", lambda t: t.replace("user_id:token", "user_id"), r"tiny\.inter: header column 'user_id' is not"),
        ("inter", lambda t: t.replace("rating:float", "rating:decimal"), r"tiny\.inter: type 'decimal' of field"),
        ("inter", lambda t: t.splitlines()[0] + "\n", r"tiny\.inter: no rows after the header"),
        ("inter", lambda t: edit(t, "u1\ti2\t4\t2", "u1\ti2"), r"tiny\.inter:3: expected 4 fields like the header, got 2"),
        ("inter", lambda t: edit(t, "u1\ti2\t4\t2", "u1\ti2\t4\t2\tx"), r"tiny\.inter:3: expected 4 fields .* got 5"),
        ("inter", lambda t: edit(t, "u1\ti2\t4\t2", "u1\ti2\t4\tyesterday"),
         r"tiny\.inter: column 'timestamp:float' expects numbers, got 'yesterday' \(data row 2\)"),
        ("item", lambda t: edit(t, "1995", "mid-90s"), r"tiny\.item: column 'year:float' expects numbers, got 'mid-90s'"),
        ("inter", lambda t: "\ufeff" + t, r"tiny\.inter: starts with a byte-order mark"),
        ("inter", lambda t: t.replace("\t", " ", 3), r"tiny\.inter: header column .* is not 'name:type' \(fields are "
                                                    r"separated by field_separator"),
        ("inter", lambda t: t.replace("user_id:token", "user_id:token:x"), r"tiny\.inter: header column "
                                                                          r"'user_id:token:x' is not 'name:type'"),
        ("inter", lambda t: t.replace("rating:float", "user_id:token"),
         r"tiny\.inter: the header names \['user_id'\] more than once"),
        ("inter", lambda t: edit(t, "u1\ti2\t4\t2", "u1\ti2\t4\t"),
         r"tiny\.inter: field 'timestamp' \(TIME_FIELD\) is empty or not finite in data row 2 \(empty\)"),
        ("inter", lambda t: edit(t, "u1\ti2\t4\t2", "u1\ti2\t4\tinf"),
         r"tiny\.inter: field 'timestamp' \(TIME_FIELD\) is empty or not finite in data row 2 \(inf\)"),
        ("inter", lambda t: edit(t, "u1\ti2\t4\t2", "\ti2\t4\t2"),
         r"tiny\.inter: field 'user_id' \(USER_ID_FIELD\) is empty or not finite in data row 2"),
        ("inter", lambda t: t.replace("timestamp:float", "time:float"),
         r"tiny\.inter: field 'timestamp' \(TIME_FIELD\) is not in its header"),
        ("item", lambda t: t + "i1\tAlpha again\t1990\tDrama\n", r"tiny\.item: item 'i1' has more than one row"),
        ("item", None, r"cold_start_items: needs the item file 'tiny\.item'"),
        ("item", "latin-1", r"tiny\.item: not (?i:utf-8) text near line \d+ \(invalid"),
        ("item", lambda t: "\n".join([t.splitlines()[0]] + [line.split("\t")[0] + "\t\t1990\t"
                                                             for line in t.splitlines()[1:]]) + "\n",
         r"text_fields \['title', 'genre'\]: every item of 'tiny' has empty text"),
        ("item", lambda t: t.replace("title:token", "name:token"),
         r"tiny\.item: field 'title' is not in its header \(load_col lists it\); header: \['item_id', 'name'"),
        ("item", lambda t: t.replace("item_id:token", "iid:token"),
         r"tiny\.item: field 'item_id' \(ITEM_ID_FIELD\) is not in its header"),
        # a token time was split by token ids (the order values first appear in the file), without a word
        ("inter", lambda t: t.replace("timestamp:float", "timestamp:token"),
         r"tiny\.inter: field 'timestamp' \(TIME_FIELD\) has type token; expected float \(a number that orders "
         r"time, e\.g\. timestamp:float in seconds; convert dates to numbers first\)"),
        # a float id: a bare "need at least one array to concatenate"
        ("item", lambda t: t.replace("item_id:token", "item_id:float"),
         r"tiny\.item: field 'item_id' \(ITEM_ID_FIELD\) has type float; expected token \(ids are names"),
        ("inter", lambda t: t.replace("user_id:token", "user_id:token_seq"),
         r"tiny\.inter: field 'user_id' \(USER_ID_FIELD\) has type token_seq; expected token"),
    ],
    ids=["empty", "bad-header", "bad-type", "header-only", "short-row", "long-row", "non-numeric-time",
         "non-numeric-item-field", "byte-order-mark", "space-separated-header", "two-colons", "column-twice", "empty-time", "infinite-time",
         "empty-user",
         "no-time-field", "item-twice", "missing-item-file", "not-utf-8", "all-empty-texts", "renamed-text-column",
         "no-item-id-column", "token-time", "float-item-id", "token-seq-user-id"],
)
def test_malformed_atomic_files(tiny_config, tmp_path, which, mutate, message):
    data = tmp_path / "data"
    shutil.copytree(TINY, data / "tiny")
    path = data / "tiny" / f"tiny.{which}"
    if mutate is None:
        path.unlink()
    elif mutate == "latin-1":
        path.write_bytes(path.read_bytes().replace(b"Alpha", "Alph\u00e4".encode("latin-1")))
    else:
        path.write_text(mutate(path.read_text()))
    cache = tmp_path / "cache"
    tiny_config.update(data_path=str(data), cache_dir=str(cache))
    with pytest.raises(ValueError, match=message):
        dataset = InductiveSequentialDataset(Config(model="SASRec", dataset="tiny", config_dict=tiny_config))
        dataset.item_text_emb  # texts are embedded on first use
    assert files_under(cache) == []


TINY_SETTINGS = {
    "dataset": "tiny", "data_path": str(TINY.parent), "split_timestamps": "[5,8]", "cold_start_items": "year > 1999",
    "load_col": "{'inter': ['user_id','item_id','rating','timestamp'], 'item': ['item_id','title','year','genre']}",
    "text_fields": "['title','genre']", "MAX_ITEM_LIST_LENGTH": "2", "rqvae_method": "faiss_rq",
    "rqvae_codebook_size": "2", "state": "ERROR", "epochs": "1", "n_layers_enc": "1", "n_layers_dec": "1",
    "hidden_size": "8", "inner_size": "8", "topk": "[2]", "valid_metric": "Recall@2",
}


def tiny_run(**overrides):
    """Command-line arguments of a run on the hand-written tiny dataset, with ``overrides``."""
    return [f"--{key}={value}" for key, value in {**TINY_SETTINGS, **overrides}.items()]


def tiny_specgrpp_run(**overrides):
    """:func:`tiny_run` with the SpecGR++ settings its 6 items need (β, and a tiebreak at a computed cut-off)."""
    return tiny_run(num_beams=2, specgr_threshold_tiebreak="ndcg@2", **overrides)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model=NoSuchRec"], r"error: model 'NoSuchRec' is neither a recbole-specgr model"),
        (["--model=SASRec", "--dataset=nowhere"], r"error: dataset 'nowhere': no 'nowhere\.inter'"),
        (["--model=SASRec", "--epochs=abc"], r"error: epochs: expected int \(like its default 50\), got 'abc' from "
                                             r"the command line"),
        (["--model=SASRec", "--learning_rate=fast"], r"error: learning_rate: expected float"),
        (["--model=SASRec", "--epochs=None"], r"error: epochs: expected int \(like its default 50\), got None from "
                                              r"the command line"),
        (["--model=SASRec", "--metrics=['MRR']"],
         r"error: metrics: expected a list of Recall and NDCG .*, got \['MRR'\] from the command line"),
        (["--model=SASRec", "--show_progress=maybe"], r"error: show_progress: expected true, false or ~, got 'maybe'"),
        (["--model=SASRec", *tiny_run(split_timestamps=5)], r"error: split_timestamps: expected \[t_valid, t_test\]"),
        (["--model=SASRec", *tiny_run(), "--result_json=afile/result.json"],
         r"error: \[Errno \d+\] cannot write afile/result\.json"),
        (["--model=SASRec", "--config=x.yaml"], r"error: config: no model or dataset has this setting \(from the "
                                                r"command line\) \(a key of your own model: strict_keys: False\)"),
        (["--model=SASRec", "--epochs=-1"], r"error: epochs: expected an int >= 0, got -1 from the command line"),
        (["--model=TIGER", "--hidden_size=0"], r"error: hidden_size: expected an int >= 1, got 0 from the command line"),
        (["--model=RQVAE", "--rqvae_hidden_sizes=[64,-4]"],
         r"error: rqvae_hidden_sizes: expected a list of ints >= 1, got \[64, -4\] from the command line"),
        (["--model=SASRec", "--config_files=missing.yaml"], r"error: .*No such file or directory: 'missing\.yaml'"),
        (["--model=SASRec", "--config_files=bad.yaml"],
         r"error: .*bad\.yaml: not valid YAML \(expected ',' or '\]', but got '<stream end>' \(line 2, column 1\)\)$"),
        (["--model=SASRec", "--config_files=twice.yaml"],
         r"error: .*twice\.yaml: not valid YAML \(key 'epochs' appears twice \(line 3, column 1\)\)"),
        (["--model=SASRec", "--config_files=list.yaml"],
         r"error: .*list\.yaml: expected a mapping of settings \(key: value lines\), got a list"),
        (["--model=SASRec", "--config_files=typo.yaml"],
         r"error: learning_rat: no model or dataset has this setting \(from .*typo\.yaml\); did you mean "
         r"'learning_rate'"),
        (["--model=SASRec", "--epoch=3"],
         r"error: epoch: no model or dataset has this setting \(from the command line\); did you mean 'epochs'\?"),
        (["--model=SASRec", "--epochs", "3"], r"error: command line: expected --key=value, got '--epochs'"),
        (["--model=SASRec,NoSuchRec"], r"error: model 'NoSuchRec' is neither a recbole-specgr model"),
        (["--model=TIGER", *tiny_run(num_beams=1)], r"error: num_beams: β = 1 must be >= max\(topk\) = 2"),
        (["--model=SpecGRPP", *tiny_specgrpp_run(specgr_draft_size=-1)],
         r"error: specgr_draft_size: expected an int >= 0, got -1 from the command line"),
        (["--model=SpecGRPP", "--specgr_draft_weight=-1"],
         r"error: specgr_draft_weight: expected a number >= 0, got -1 from the command line"),
        (["--model=S3Rec", "--pretrain_epochs=-1"],
         r"error: pretrain_epochs: expected an int >= 0, got -1 from the command line"),
        (["--model=SpecGRPP", "--specgrpp_cl_negatives=-3"],
         r"error: specgrpp_cl_negatives: expected an int >= 0, got -3 from the command line"),
        (["--model=SpecGRPP", *tiny_specgrpp_run(specgrpp_finetune_warmup_steps=-1)],
         r"error: specgrpp_finetune_warmup_steps: expected an int >= 0, got -1 from the command line"),
        (["--model=SpecGRPP", *tiny_specgrpp_run(specgrpp_finetune_total_steps=200)],
         r"error: specgrpp_finetune_total_steps: expected an int > specgrpp_finetune_warmup_steps \(200\) or ~, got 200"),
        (["--model=SpecGRPP", *tiny_specgrpp_run(specgr_drafting_backend="fast")],
         r"error: specgr_drafting_backend: expected one of dense, faiss, got 'fast' from the command line$"),
        (["--model=SpecGRPP", *tiny_specgrpp_run(specgr_unseen_threshold="low")],
         r"error: specgr_unseen_threshold: expected a number or ~, got 'low'"),
        (["--model=SpecGRPP", *tiny_specgrpp_run(item_text_input=False)],
         r"error: specgr_text_weight_grid: \[1, 2\] needs the item texts of the text prior, which this SpecGRPP does "
         r"not keep \(SpecGRPP: item_text_input: True\); set it to \[0\] or ~"),
        (["--model=TIGER", *tiny_run(rqvae_codebook_size=1)],
         r"error: rqvae_codebook_size: expected an int >= 2, got 1 from the command line"),
        (["--model=SASRec", *tiny_run(split_timestamps="[8,5]")], r"error: split_timestamps: expected \[t_valid"),
        (["--model=SASRec", *tiny_run(cold_start_items="year >>> 3")], r"error: cold_start_items: cannot evaluate"),
        (["--model=SASRec", *tiny_run(), "--epochs=2"],
         r"error: --epochs: given twice on the command line, as '1' and '2'"),
        (["--model=Pop", *tiny_run()], r"error: model 'Pop': expected a sequential model \(.*SASRec, FDSA, S3Rec"),
        (["--model=SASRec,BPR", *tiny_run()], r"error: model 'BPR': expected a sequential model .* got a general "
                                              r"recommender"),
        (["--model=SASRec", "--clip_grad_norm={'max_norm':-1}"],
         r"error: clip_grad_norm: expected ~ or \{\} \(no clipping\) or a mapping such as \{max_norm: 1\.0\} with "
         r"max_norm > 0, got "
         r"\{'max_norm': -1\} from the command line"),
        (["--model=SASRec", "--clip_grad_norm=5"], r"error: clip_grad_norm: expected ~ or .* got 5 from"),
        (["--model=SpecGRPP", "--specgrpp_finetune_learning_rate=0"],
         r"error: specgrpp_finetune_learning_rate: expected a number > 0, got 0 from the command line"),
        (["--model=SASRec", "--config_files=nan.yaml"], r"error: specgr_threshold: expected a number, got nan from "
                                                        r"--config_files"),
        (["--model=TIGER", "--rel_pos_buckets=0"], r"error: rel_pos_buckets: expected an int >= 4, got 0"),
        (["--model=TIGER", *tiny_run(num_beams=2, rel_pos_max_distance=8)],
         r"error: rel_pos_max_distance: expected more than 8, the encoder's exact distances for rel_pos_buckets, "
         r"got 8"),
        (["--model=TIGER", *tiny_run(num_beams=2, rel_pos_buckets=6, rel_pos_max_distance=3)],
         r"error: rel_pos_max_distance: expected more than 3, the decoder's exact distances for rel_pos_buckets, "
         r"got 3"),
        (["--model=SASRec", "--topk=[]"], r"error: topk: expected a non-empty list of ints >= 1, got \[\]"),
        (["--model=RQVAE", "--rqvae_hidden_sizes=64"], r"error: rqvae_hidden_sizes: expected a list of ints >= 1, "
                                                        r"got 64"),
        (["--model=SASRec", "--hidden_dropout_prob=1.5"],
         r"error: hidden_dropout_prob: expected a probability in \[0, 1\), got 1\.5"),
        (["--model=SASRec", "--layer_norm_eps=-1"], r"error: layer_norm_eps: expected a number > 0, got -1"),
        (["--model=RQVAE", "--rqvae_commitment_weight=-1"],
         r"error: rqvae_commitment_weight: expected a number >= 0, got -1"),
        (["--model=SASRec", "--learner=foo"], r"error: learner: expected one of adam, adamw, sgd, .* got 'foo'"),
        (["--model=SASRec", "--hidden_act=foo"], r"error: hidden_act: expected one of gelu, relu, .* got 'foo'"),
        (["--model=UniSRec", "--n_exps=0"], r"error: n_exps: expected an int >= 1, got 0"),
        (["--model=TextSim", "--textsim_last_n=0"], r"error: textsim_last_n: expected an int >= 1, got 0"),
        (["--model=TIGER", "--enable_scaler=True"], r"error: enable_scaler: RecBole's trainer clips the gradients "
                                                    r"while the scaler still multiplies them .* set one of the two"),
        (["--model=SpecGRPP", "--specgr_text_last_n=0"], r"error: specgr_text_last_n: expected an int >= 1, got 0"),
        (["--model=SpecGRAux", "--n_layers_enc=1"], r"error: n_layers_enc: a setting of SpecGRAux's component model, "
                                                    r"not passed on .* give it in specgr_aux_verifier_config \(TIGER\)"),
        (["--model=SASRec", *tiny_run(split_timestamps="~", split_time_quantiles="[]")],
         r"error: split_time_quantiles: expected \[q_valid, q_test\] .* got \[\]"),
        (["--model=SASRec", *tiny_run(text_fields=5)],
         r"error: text_fields: expected a field name or a list of \.item field names, got 5"),
        (["--model=FDSA", *tiny_run(selected_features="genre")],
         r"error: selected_features: expected a list of item field names, got 'genre'"),
        (["--model=SASRec", "--hidden_act=GELU"], r"error: hidden_act: expected one of gelu, .* got 'GELU'"),
        (["--model=FDSA", *tiny_run(selected_features="['nope']")],
         r"error: selected_features: \['nope'\] are not item fields of 'tiny' \(loaded: \['genre', 'title', 'year'\]\)"),
        (["--model=SpecGRPP", "--specgr_draft_weight_grid=[0]", "--specgr_text_weight_grid=[1]"],
         r"error: specgr_text_weight_grid: \[1\] is tried with every α > 0 only \(the joint ranking\), and every α "
         r"here is 0 .* from the command line"),
        (["--model=SpecGRPP", "--specgr_draft_weight_grid=[0]", "--specgr_novelty_weight_grid=[0, 8]"],
         r"error: specgr_novelty_weight_grid: \[0, 8\] is tried with every α > 0 only \(the joint ranking\)"),
        (["--model=SpecGRPP", "--specgr_novelty_last_n=0"], r"error: specgr_novelty_last_n: expected an int >= 1, got 0"),
        (["--model=SpecGRAux", "--specgr_unseen_score_grid=[-2.0]"],
         r"error: specgr_unseen_score_grid: \[-2\.0\] is tried with every α > 0 only .*specgr_draft_weight_grid "
         r"None, specgr_draft_weight 0\.0\)"),
        (["--model=SASRec", *tiny_run(), "--result_json=adir"], r"error: \[Errno 21\] cannot write adir: it is a "
                                                               r"folder"),
        (["--model=SASRec", "--eval_workers=0"], r"error: eval_workers: expected an int >= 1, got 0 from the command "
                                                 r"line"),
        (["--model=TIGER", "--eval_workers=two"], r"error: eval_workers: expected an int >= 1, got 'two'"),
        (["--model=SASRec", *tiny_run(topk="[10]", valid_metric="Recall@10")],
         r"error: topk: cut-offs \[10\] exceed the 6 items of 'tiny'; expected cut-offs of at most 6"),
        (["--model=SASRec", "--load_col=inter"], r"error: load_col: expected a mapping of file suffixes to field "
                                                 r"lists \(or '\*', .* got 'inter' from the command line"),
        (["--model=SASRec", "--load_col={'inter': 'user_id'}"], r"error: load_col: expected a mapping .* got "
                                                                r"\{'inter': 'user_id'\}"),
        (["--model=SASRec", "--loss_type=foo"], r"error: loss_type: expected one of CE, BPR, got 'foo'"),
        (["--model=SASRec", "--loss_type=BPR"], r"error: loss_type: BPR needs negative samples; set "
                                                r"train_neg_sample_args"),
        (["--model=FDSA", *tiny_run(), "--selected_features=['year']"],
         r"error: selected_features: \['year'\] of 'tiny' are not token or token_seq fields \(or float fields also "
         r"listed in numerical_features\); FDSA embeds categorical item fields"),
        (["--model=SASRec", *tiny_run(cold_start_items="year > 0")],
         r"error: cold_start_items: 'year > 0' matched 6 of the 6 items of 'tiny', .* left the train split empty"),
        (["--model=SASRec", "--config_files=latin.yaml"], r"error: .*latin\.yaml: expected UTF-8 text \('utf-8' "
                                                          r"codec can't decode"),
        (["--model=SASRec", "--eval_args={'order': 'TO', 'mode': 'uni100'}"],
         r"error: eval_args: expected order: TO and mode: full \(the split is by time, and every item is ranked"),
        (["--model=SASRec", "--eval_args={'mode': 'full'}"], r"error: eval_args: expected order: TO and mode: full .*"
                                                             r"got \{'mode': 'full'\} from the command line"),
        (["--model=UniSRec", "--loss_type=BPR", "--train_neg_sample_args={'distribution': 'uniform', 'sample_num': 1}"],
         r"error: loss_type: UniSRec trains with CE \(a softmax over the seen items\), got 'BPR'"),
        (["--model=SASRec", "--loss_type=BPR", "--train_neg_sample_args={'distribution': None, 'sample_num': 1}"],
         r"error: loss_type: BPR needs negative samples"),
        (["--model=TIGER", "--num_beams=10"], r"error: num_beams: β = 10 must be >= max\(topk\) = 50 from the command "
                                              r"line"),
        (["--model=SASRec", "--state=FOO"], r"error: state: expected one of info, debug, .* got 'FOO'"),
        (["--model=SASRec,SASRec"], r"error: models: SASRec given twice; expected each model once"),
    ],
    ids=["unknown-model", "unknown-dataset", "int-as-text", "float-as-text", "none-for-a-number", "unsupported-metric", "progress-not-a-bool",
         "single-cutoff", "unwritable-result-file", "abbreviated-option", "negative-epochs",
         "zero-width", "negative-layer-size", "missing-yaml", "malformed-yaml",
         "key-twice-in-yaml", "yaml-not-a-mapping", "misspelt-key-in-yaml", "misspelt-key", "value-not-joined-by-equals",
         "unknown-model-in-a-comparison",
         "beam-below-k", "negative-draft-size", "negative-draft-weight", "negative-s3rec-pretrain-epochs", "negative-cl-negatives",
         "negative-finetune-warmup", "finetune-decay-within-warmup",
         "unknown-drafting-backend", "unseen-threshold-as-text", "text-prior-without-texts",
         "impossible-codebook", "reversed-cutoffs", "bad-cold-rule",
         "repeated-key", "general-model", "general-model-in-a-comparison",
         "negative-clip", "clip-not-a-mapping", "zero-finetune-rate", "nan-threshold", "no-position-buckets",
         "distance-within-encoder-exact-buckets", "distance-within-decoder-exact-buckets", "empty-topk", "hidden-sizes-not-a-list", "dropout-above-one",
         "negative-layer-norm-eps", "negative-commitment", "unknown-learner", "unknown-activation", "no-experts",
         "textsim-last-n-zero", "scaler-with-clipping", "text-prior-last-n-zero",
         "component-key-on-the-composition", "empty-quantiles", "text-fields-not-names", "feature-fields-not-a-list", "activation-case", "unknown-feature-field", "text-grid-without-joint-ranking",
         "novelty-grid-without-joint-ranking", "novelty-last-n-zero",
         "unseen-score-grid-without-joint-ranking", "result-file-a-folder", "no-eval-workers", "eval-workers-as-text",
         "topk-above-the-items", "load-col-a-name", "load-col-field-not-a-list", "unknown-loss", "bpr-without-negatives",
         "float-feature-for-fdsa", "cold-rule-matches-every-item", "config-file-not-utf-8", "sampled-ranking", "random-order",
         "unisrec-with-bpr", "bpr-with-no-distribution", "beams-below-k-early",
         "unknown-log-state", "model-twice"],
)
def test_command_line_mistakes_exit_2_with_one_error_line(run_dir, session_cache, monkeypatch, capsys, args,
                                                          message):
    (run_dir / "bad.yaml").write_text("epochs: [1\n")
    (run_dir / "list.yaml").write_text("- epochs: 1\n")
    (run_dir / "twice.yaml").write_text("epochs: 1\nlearning_rate: 0.01\nepochs: 2\n")
    (run_dir / "afile").write_text("a file where a folder is expected\n")
    (run_dir / "typo.yaml").write_text("learning_rat: 0.5\n")
    (run_dir / "nan.yaml").write_text("specgr_threshold: .nan\n")
    (run_dir / "latin.yaml").write_bytes("# r\u00e9sum\u00e9\nepochs: 1\n".encode("latin-1"))
    (run_dir / "adir").mkdir()
    argv = ["run_recbole_specgr.py", *args, f"--cache_dir={run_dir / 'cache'}", f"--checkpoint_dir={run_dir / 'saved'}"]
    monkeypatch.setattr("sys.argv", argv)  # RecBole's Config reads sys.argv itself
    with pytest.raises(SystemExit) as exit_info:
        run_recbole_specgr.main(argv[1:])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    error_lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1 and "Traceback" not in err, err
    assert re.search(message, error_lines[0]), error_lines[0]
    assert files_under(run_dir / "saved") == []


@pytest.mark.parametrize("content, message", [
    ('{"split_timestamps": [5, 8]', r"tiny\.split\.json: not valid JSON \(Expecting .*\); expected "
                                   r"\{\"split_timestamps\": \[t_valid, t_test\]\}"),
    ("[5, 8]", r"tiny\.split\.json: expected \{\"split_timestamps\": \[t_valid, t_test\]\}, got \[5, 8\]"),
    ("null", r"tiny\.split\.json: expected .*, got null"),
    ('{"split_timestmps": [5, 8]}', r"tiny\.split\.json: expected .*, got \{\"split_timestmps\": \[5, 8\]\}"),
], ids=["bad-json", "a-list", "null", "misspelt-key"])
def test_a_malformed_split_file_is_named(tiny_config, tmp_path, content, message):
    """``split_timestamps: file`` reads ``<dataset>.split.json``; a file without the cut-offs was a raw JSON or
    AttributeError, and a misspelt key fell back to the time quantiles without a word."""
    data = tmp_path / "data"
    shutil.copytree(TINY, data / "tiny")
    (data / "tiny" / "tiny.split.json").write_text(content)
    tiny_config.update(data_path=str(data), cache_dir=str(tmp_path / "cache"), split_timestamps="file")
    with pytest.raises(ValueError, match=message):
        InductiveSequentialDataset(Config(model="SASRec", dataset="tiny", config_dict=tiny_config))
    (data / "tiny" / "tiny.split.json").write_text('{"split_timestamps": [5, 8]}')  # the well-formed file works
    dataset = InductiveSequentialDataset(Config(model="SASRec", dataset="tiny", config_dict=tiny_config))
    assert dataset.split_timestamps == (5.0, 8.0)


@pytest.mark.parametrize("model, key", [("TIGER", "init_checkpoint"), ("SpecGRAux", "specgr_aux_verifier_checkpoint")],
                         ids=["init-checkpoint", "specgraux-verifier"])
def test_a_checkpoint_of_another_split_is_refused_before_training(run_dir, monkeypatch, capsys, model, key):
    """A TIGER trained with cut-offs [5, 8] given to a run on [6, 8] (the seen items happen to be the same): the
    run's valid period starts after the checkpoint's (SpecGRAux checked only the dataset name, init_checkpoint
    nothing)."""
    import json

    def main(*args):
        argv = [*args, f"--cache_dir={run_dir / 'cache'}"]
        monkeypatch.setattr("sys.argv", ["run_recbole_specgr.py", *argv])  # RecBole's Config reads sys.argv itself
        run_recbole_specgr.main(argv)

    main("--model=TIGER", *tiny_run(valid_metric="Recall@2"), f"--checkpoint_dir={run_dir / 'trained'}",
         "--result_json=tiger.json")
    checkpoint = json.loads((run_dir / "tiger.json").read_text())["checkpoint"]
    capsys.readouterr()
    args = tiny_run(split_timestamps="[6,8]", num_beams=2, valid_metric="Recall@2")
    if model == "SpecGRAux":  # TIGER's sizes are not SpecGRAux's keys (they go in specgr_aux_verifier_config)
        args = [arg for arg in args if arg.split("=")[0][2:] not in ("n_layers_enc", "n_layers_dec", "hidden_size",
                                                                    "inner_size")]
    with pytest.raises(SystemExit) as exit_info:
        main(f"--model={model}", *args, f"--{key}={checkpoint}", f"--checkpoint_dir={run_dir / 'saved'}")
    error_lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert exit_info.value.code == 2 and len(error_lines) == 1
    assert re.fullmatch(rf"error: {key}: {re.escape(checkpoint)} was trained on another split \(split_timestamps "
                        rf"\[5, 8\] there, \[6, 8\] here\); train it with this run's split settings", error_lines[0]), \
        error_lines[0]
    assert files_under(run_dir / "saved") == []


def test_a_killed_writer_leaves_no_artifact_and_the_next_write_cleans_up(tmp_path):
    """SIGKILL in the middle of a cache / checkpoint write (every artifact goes through atomic_write): the target is
    not created, and the next write into the folder removes the dead writer's temporary file."""
    import signal
    import subprocess

    target = tmp_path / "cache" / "semantic_ids.pt"
    script = (f"import os, signal\nfrom recbole_specgr.atomic import atomic_write\n"
              f"with atomic_write({str(target)!r}) as f:\n"
              f"    f.write(b'half of a file')\n    f.flush()\n    os.kill(os.getpid(), signal.SIGKILL)\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=str(ROOT), capture_output=True)
    assert done.returncode == -signal.SIGKILL
    leftovers = files_under(tmp_path / "cache")
    assert not target.exists() and len(leftovers) == 1 and leftovers[0].startswith(".tmp_")
    from recbole_specgr.atomic import atomic_write

    with atomic_write(str(tmp_path / "cache" / "other.pt")) as f:  # the rerun writes into the same folder
        f.write(b"complete")
    assert files_under(tmp_path / "cache") == ["other.pt"]


def test_written_files_get_the_permissions_of_the_umask_and_errors_name_the_target(tmp_path):
    from recbole_specgr.atomic import atomic_write

    old = os.umask(0o027)
    try:
        with atomic_write(str(tmp_path / "out" / "result.json"), "w") as f:
            f.write("{}")
    finally:
        os.umask(old)
    assert (tmp_path / "out" / "result.json").stat().st_mode & 0o777 == 0o640  # mkstemp alone gives 0o600
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OSError, match=r"cannot write .*afile/result\.json"):
        with atomic_write(str(tmp_path / "afile" / "result.json"), "w") as f:
            f.write("{}")


def test_a_value_holding_an_equals_sign_is_read_whole(run_dir, monkeypatch):
    """``--cold_start_items=year>=1999``: RecBole's own reader drops an argument with two ``=`` (the run went on with
    no cold-start rule); the whole value is read."""
    monkeypatch.setattr("sys.argv", ["run_recbole_specgr.py", "--cold_start_items=year>=1999", "--epochs=3"])
    config = Config(model="SASRec", dataset="ml-100k")
    assert config["cold_start_items"] == "year>=1999" and config["epochs"] == 3


def _gzipped_tiny(tmp_path):
    import gzip

    folder = tmp_path / "data" / "tiny"
    folder.mkdir(parents=True)
    (folder / "tiny.inter.gz").write_bytes(gzip.compress((TINY / "tiny.inter").read_bytes()))
    shutil.copyfile(TINY / "tiny.item", folder / "tiny.item")
    return folder, {"dataset": "tiny", "data_path": str(folder), "cache_dir": str(tmp_path / "cache")}


def test_a_gzipped_dataset_is_copied_again_when_its_source_changes(tmp_path):
    """The unpacked copy in the cache is remade when its source is newer: a copy cut short (an interrupted copy) or
    an edited ``.item`` was reused for good before."""
    from recbole_specgr.data.prepare import prepare_data_path

    folder, config = _gzipped_tiny(tmp_path)
    prepare_data_path(config)
    target = Path(config["data_path"])
    assert (target / "tiny.inter").read_bytes() == (TINY / "tiny.inter").read_bytes()
    assert (target / "tiny.item").read_text() == (folder / "tiny.item").read_text()
    (target / "tiny.item").write_text("item_id:token\ttitle:token_seq\n")  # a copy cut short (a newer file)
    prepare_data_path(dict(config, data_path=str(folder)))
    assert (target / "tiny.item").read_text() == (folder / "tiny.item").read_text()
    (folder / "tiny.item").write_text((folder / "tiny.item").read_text().replace("Comedy", "Drama"))
    os.utime(folder / "tiny.item", (1, 1))  # edited, or replaced by an older-dated file (tar, cp -p)
    prepare_data_path(dict(config, data_path=str(folder)))
    assert "Drama" in (target / "tiny.item").read_text()
    assert (target / "tiny.item").read_text() == (folder / "tiny.item").read_text()


def test_a_truncated_gzip_names_the_file_and_leaves_no_copy(tmp_path):
    from recbole_specgr.data.prepare import prepare_data_path

    folder, config = _gzipped_tiny(tmp_path)
    packed = folder / "tiny.inter.gz"
    packed.write_bytes(packed.read_bytes()[:-12])
    with pytest.raises(ValueError, match=r"tiny\.inter\.gz: not a complete gzip file"):
        prepare_data_path(config)
    assert files_under(tmp_path / "cache") == []


def test_interactions_of_items_missing_from_the_item_file_are_dropped_with_a_warning(tiny_config, tmp_path, caplog):
    data = tmp_path / "data"
    shutil.copytree(TINY, data / "tiny")
    item = data / "tiny" / "tiny.item"
    lines = item.read_text().splitlines()
    item.write_text("\n".join(line for line in lines if not line.startswith("i6\t")) + "\n")
    n_rows = sum(1 for line in (data / "tiny" / "tiny.inter").read_text().splitlines()[1:] if "\ti6\t" in line)
    tiny_config.update(data_path=str(data), cache_dir=str(tmp_path / "cache"))
    InductiveSequentialDataset(Config(model="SASRec", dataset="tiny", config_dict=tiny_config))
    assert n_rows > 0 and f"dropped {n_rows} of " in caplog.text and "has no row in its .user / .item file" in caplog.text


@pytest.mark.parametrize("content, message", [
    (None, r"no such checkpoint file"),
    (b"not a checkpoint at all", r"not a checkpoint \(torch\.save writes a zip archive"),
])
def test_a_missing_or_foreign_init_checkpoint_is_named(tmp_path, content, message):
    from recbole_specgr.compat import load_checkpoint

    path = tmp_path / "model.pth"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=str(path).replace(".", r"\.") + ": " + message):
        load_checkpoint(str(path))


def test_text_fields_given_as_one_name_is_that_field(tiny_config):
    tiny_config.update(text_fields="title")
    dataset = InductiveSequentialDataset(Config(model="SASRec", dataset="tiny", config_dict=tiny_config))
    assert dataset.text_fields == ["title"] and dataset.item_texts[1] == "Alpha"


def test_strict_keys_false_lets_the_keys_of_ones_own_model_through(run_dir):
    with pytest.raises(ValueError, match=r"my_model_width: no model or dataset has this setting \(from config_dict\)"):
        Config(model="SASRec", dataset="ml-100k", config_dict={"my_model_width": 3})
    config = Config(model="SASRec", dataset="ml-100k", config_dict={"my_model_width": 3, "strict_keys": False})
    assert config["my_model_width"] == 3


def test_valid_edge_values_are_accepted(run_dir, tmp_path, monkeypatch):
    """What the checks must let through: YAML merge keys, ~ on the command line, eval_step 0 (train without
    validation) and stopping_step 0."""
    merged = tmp_path / "merged.yaml"
    merged.write_text("base: &base {max_norm: 1.0}\nclip_grad_norm:\n  <<: *base\n  norm_type: 2\n")
    monkeypatch.setattr("sys.argv", ["run_recbole_specgr.py", "--show_progress=~", "--eval_step=0", "--stopping_step=0"])
    config = Config(model="SASRec", dataset="ml-100k", config_file_list=[str(merged)],
                    config_dict={"strict_keys": False})  # "base" is not a setting
    assert config["clip_grad_norm"] == {"max_norm": 1.0, "norm_type": 2}
    assert config["show_progress"] is None and config["eval_step"] == 0 and config["stopping_step"] == 0


@pytest.mark.parametrize("item_ids, texts, message", [
    (["a", "b"], ["only one text"], r"--items: expected one text per item id, got 2 ids and 1 texts"),
    (["a"], ["  "], r"--items: expected a non-empty text for every item, none for \['a'\]"),
    (["a", "a"], ["one", "two"], r"--items: item ids given twice: \['a'\]"),
    ([""], ["text"], r"--items: expected non-empty string ids, got \[''\]"),
    (["old"], ["text"], r"--items: item ids already in the model: \['old'\]"),
], ids=["fewer-texts", "empty-text", "id-twice", "empty-id", "known-id"])
def test_new_items_api_refuses_what_the_items_file_reader_refuses(item_ids, texts, message):
    """``add_new_items`` is the Python API behind ``--items``: two ids and one text added one item to the model's
    tables and two to its ids (a later recommendation failed with an IndexError)."""

    from recbole_specgr import new_items

    model = SimpleNamespace(config={}, item_tokens=["[PAD]", "old"])
    with pytest.raises(ValueError, match=message):
        new_items.add_new_items(model, item_ids, texts)
    assert model.item_tokens == ["[PAD]", "old"]


@pytest.mark.parametrize("args, message", [
    (["--topk", "0"], r"error: --topk: expected an int >= 1, got 0"),
    (["--device", "foo"], r"error: --device: "),
    (["--items", "latin1.tsv"], r"error: .*latin1\.tsv: not UTF-8 text \(invalid continuation byte at byte \d+\)"),
], ids=["zero-topk", "unknown-device", "latin-1-items"])
def test_new_items_command_line_mistakes_are_one_line(tmp_path, monkeypatch, exits_with_error, args, message):
    from recbole_specgr import new_items

    monkeypatch.chdir(tmp_path)
    (tmp_path / "new.tsv").write_text("item_id\ttext\nx\tA film\n")
    (tmp_path / "latin1.tsv").write_bytes("item_id\ttext\nx\tAlph\u00e4 film\n".encode("latin-1"))
    argv = ["--checkpoint", "missing.pth", "--items", "new.tsv", "--history", "1", *args]
    exits_with_error("^" + message, new_items.main, argv)


def test_fdsa_takes_a_float_field_listed_in_numerical_features(tiny_config):
    """RecBole's FDSA embeds float item fields named in numerical_features too: the check that refuses a float
    ``selected_features`` field (an empty torch.cat in its first forward) lets those through."""
    from recbole_specgr.utils import create_dataset

    settings = {**tiny_config, "topk": [2], "valid_metric": "Recall@2", "selected_features": ["year"]}
    with pytest.raises(ValueError, match=r"selected_features: \['year'\] of 'tiny' are not token or token_seq fields "
                                         r"\(or float fields also listed in numerical_features\)"):
        create_dataset(Config(model="FDSA", dataset="tiny", config_dict=settings))
    dataset = create_dataset(Config(model="FDSA", dataset="tiny", config_dict={**settings,
                                                                               "numerical_features": ["year"]}))
    assert dataset.field2type["year"].value == "float"


def test_an_error_line_is_the_first_line_of_the_message():
    """One formatting for every command: a KeyError without the quotes str() adds, a message-less error by its type."""
    from recbole_specgr.cli import error_line

    assert error_line(KeyError("model: give it as --model=NAME")) == "error: model: give it as --model=NAME"
    assert error_line(ValueError("first line\nsecond")) == "error: first line"
    assert error_line(OSError()) == "error: OSError"


def test_a_history_length_that_cannot_fit_in_memory_is_named(tiny_config, tmp_path, monkeypatch):
    """MAX_ITEM_LIST_LENGTH 1e8 was killed for memory (or swapped for minutes) while the histories were padded."""
    from recbole_specgr.data import dataset as dataset_module

    tiny_config.update(cache_dir=str(tmp_path / "cache"), MAX_ITEM_LIST_LENGTH=10**8)
    monkeypatch.setattr(dataset_module, "available_memory", lambda: 2**30)  # 1 GiB free: 1e8 items need far more
    config = Config(model="SASRec", dataset="tiny", config_dict=tiny_config)
    with pytest.raises(ValueError, match=r"^MAX_ITEM_LIST_LENGTH: 100000000 pads each of the \d+ histories of 'tiny' "
                                         r"to 100000000 items, ~[\d,]+\.\d GiB to build, more than the 1\.0 GiB available; "
                                         r"the longest history here has 3 items \(a longer setting only adds padding\); "
                                         r"expected at most 3$"):
        InductiveSequentialDataset(config)
    tiny_config["MAX_ITEM_LIST_LENGTH"] = 10**5  # a few MiB for the tiny dataset: fits, padding only
    padded = InductiveSequentialDataset(Config(model="SASRec", dataset="tiny", config_dict=tiny_config))
    assert padded.inter_feat[padded.item_id_list_field].shape[1] == 10**5


def test_available_memory_is_the_least_of_the_host_and_a_containers_limit(tmp_path, monkeypatch):
    """psutil sees the host: inside a container with a memory limit the history check would let through arrays the
    container is killed for."""
    from recbole_specgr.data import dataset as dataset_module

    monkeypatch.setattr(dataset_module.psutil, "virtual_memory", lambda: SimpleNamespace(available=10 * 2**30))
    (tmp_path / "max").write_text("4294967296\n")  # a 4 GiB limit, 1 GiB of it used
    (tmp_path / "current").write_text("1073741824\n")
    (tmp_path / "none").write_text("max\n")  # cgroup v2 without a limit
    files = [(str(tmp_path / "missing"), str(tmp_path / "missing")), (str(tmp_path / "max"), str(tmp_path / "current"))]
    monkeypatch.setattr(dataset_module, "CGROUP_MEMORY_FILES", files)
    assert dataset_module.available_memory() == 3 * 2**30
    monkeypatch.setattr(dataset_module, "CGROUP_MEMORY_FILES", [(str(tmp_path / "none"), str(tmp_path / "current"))])
    assert dataset_module.available_memory() == 10 * 2**30


def test_a_tab_in_a_yaml_file_is_named_with_its_line(run_dir, exits_with_error):
    """PyYAML's first line is only its context ("while scanning for the next token"): the problem and its place
    were dropped."""
    (run_dir / "tabs.yaml").write_text("epochs: 1\n\tlearning_rate: 0.01\n")
    exits_with_error(r"^error: .*tabs\.yaml: not valid YAML \(found character '\\t' that cannot start any token "
                     r"\(line 2, column 1\)\)$", run_recbole_specgr.main,
                     ["--model=SASRec", f"--config_files={run_dir / 'tabs.yaml'}"])
