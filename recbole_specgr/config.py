"""
recbole_specgr.config
#####################
:class:`Config`, RecBole's configurator with this package's YAML files layered in.

Precedence, lowest first (a later source overrides an earlier one):

1. RecBole's own defaults (``recbole/properties``: overall, the core model's YAML, its quick-start presets);
2. ``properties/overall.yaml`` of this package;
3. ``properties/dataset/<dataset>.yaml``;
4. the shared layers the model YAML names in ``base_configs`` (``properties/model/base/``), then
   ``properties/model/<Model>.yaml``;
5. the user's ``--config_files`` (in the order given);
6. the ``config_dict`` passed from Python;
7. ``--key=value`` on the command line.
"""

import difflib
import functools
import math
import os
import re
import sys
from importlib import resources
from pathlib import Path

import torch
import yaml
from recbole.config import Config as RecBoleConfig

from recbole_specgr.cli import error_message
from recbole_specgr.evaluation import METRICS, check_metrics
from recbole_specgr.inference.drafting import BACKENDS, FAISS_INDEXES
from recbole_specgr.tokenizer.semantic_id import METHODS


def _find_properties_dir() -> Path:
    """The ``properties/`` folder: next to the package in a source checkout, inside the install otherwise.

    ``setup.cfg`` maps the top-level ``properties/`` folder onto the package ``recbole_specgr.properties``, so a
    regular (non-editable) install carries the YAML files as package data.
    """
    checkout = Path(__file__).resolve().parent.parent / "properties"
    if (checkout / "overall.yaml").is_file():
        return checkout
    return Path(str(resources.files("recbole_specgr.properties")))


PROPERTIES_DIR = _find_properties_dir()


def base_config_paths(model_path: Path):
    """The shared layers a model YAML names in ``base_configs`` (``properties/model/base/<name>.yaml``, in order),
    loaded before it the RecBole-GNN way: one file for the T5 backbone, one for speculative inference."""
    if not model_path.is_file():
        return []
    with open(model_path, encoding="utf-8") as f:
        names = (yaml.safe_load(f) or {}).get("base_configs") or []
    paths = [model_path.parent / "base" / f"{name}.yaml" for name in names]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise ValueError(f"{model_path}: base_configs names no such file {missing}")
    return paths


class Config(RecBoleConfig):
    """RecBole ``Config`` that resolves plugin models and reads ``properties/`` (see the module docstring)."""

    def _get_model_and_dataset(self, model, dataset):
        from recbole_specgr.utils import get_model

        if model is None:
            model = self.external_config_dict.get("model")
            if model is None:
                raise KeyError("model: give it as --model=NAME, in a config file or in config_dict")
        if isinstance(model, str):
            model_class = get_model(model)
        else:
            model_class, model = model, model.__name__
        if dataset is None:
            dataset = self.external_config_dict.get("dataset")
            if dataset is None:
                raise KeyError("dataset: give it as --dataset=NAME, in a config file or in config_dict")
        return model, model_class, dataset

    def _load_internal_config_dict(self, model, model_class, dataset):
        super()._load_internal_config_dict(model, model_class, dataset)
        model_path = PROPERTIES_DIR / "model" / f"{model}.yaml"
        for path in (
            PROPERTIES_DIR / "overall.yaml",
            PROPERTIES_DIR / "dataset" / f"{dataset}.yaml",
            *base_config_paths(model_path),
            model_path,
        ):
            if path.is_file():
                loaded = self._update_internal_config_dict(str(path))
                if path.parent.name == "dataset" and loaded:
                    self.parameters["Dataset"] += [k for k in loaded if k not in self.parameters["Dataset"]]

    def _build_yaml_loader(self):
        """RecBole's YAML loader (its float resolver, added to ``yaml.FullLoader``), refusing a key given twice."""
        super()._build_yaml_loader()
        return UniqueKeyLoader

    def _load_cmd_line(self):
        """RecBole's ``--key=value`` reading, except that a value may hold ``=`` (``--cold_start_items=year>=1997``:
        RecBole's own reader drops such an argument with a log warning and the run goes on without it), and that a
        bracketed list of names, which is no Python literal (``--text_fields=[title,year]``), is a list, not the
        text '[title,year]' (RecBole's ``*_interval`` values such as ``[1,inf)`` stay text). Arguments of another form
        are left to the program (``run_recbole_specgr.py`` rejects those it does not know)."""
        values = {}
        if "ipykernel_launcher" not in sys.argv[0]:
            for key, value in filter(None, map(split_setting, sys.argv[1:])):
                value = "None" if value == "~" else value  # YAML's null, as in the files
                if key in values and values[key] != value:
                    raise ValueError(f"--{key}: given twice on the command line, as {values[key]!r} and {value!r}")
                values[key] = value
        values = self._convert_config_dict(values)
        for key, value in values.items():  # --text_fields=[title,year]: names unquoted stayed the text '[title,year]'
            if isinstance(value, str) and value[:1] + value[-1:] == "[]" and not key.endswith("_interval"):
                values[key] = [_plain_item(item) for item in value[1:-1].split(",") if item.strip()]
        return values

    def _load_config_files(self, file_list):
        """Each YAML file must hold a mapping of settings (an empty file is none); an error names the file."""
        loaded, self._file_of_key = {}, {}
        for file in file_list or ():
            try:
                f = open(file, "r", encoding="utf-8")
            except OSError as err:  # missing, a folder, unreadable: named with the key that listed it
                raise ValueError(f"config_files: cannot read {file} ({err})") from None
            with f:
                try:
                    settings = yaml.load(f.read(), Loader=self.yaml_loader)
                except yaml.YAMLError as err:
                    raise ValueError(f"{file}: not valid YAML ({error_message(err)})") from None
                except UnicodeDecodeError as err:
                    raise ValueError(f"{file}: expected UTF-8 text ({err})") from None
            if settings is None:
                continue
            if not isinstance(settings, dict):
                raise ValueError(f"{file}: expected a mapping of settings (key: value lines), got a "
                                 f"{type(settings).__name__}")
            loaded.update(settings)
            self._file_of_key.update(dict.fromkeys(settings, file))
        return loaded

    def _get_final_config_dict(self):
        final = super()._get_final_config_dict()
        if final.get("strict_keys", True):
            for key, file in self._file_of_key.items():
                check_known_keys([key], file)
            check_known_keys(self.variable_config_dict or {}, CONFIG_DICT_SOURCE)
            if CHECK_COMMAND_LINE_KEYS:
                check_known_keys(self.cmd_config_dict or {}, "the command line")
        self._check_types()
        if self.model == "SpecGRAux":
            check_no_component_keys(self.external_config_dict, final, self.dataset)
        self._check_no_nan()
        self._check_ranges(final)
        self._check_reals(final)
        self._check_choices(final)
        return final

    def _check_choices(self, final):
        """User values of ``metrics``: the inductive trainer computes Recall and NDCG by subset, so any other name was
        left out without a word; of ``show_progress``: true, false or ~ (on when stderr is a terminal)."""
        metrics = final.get("metrics")
        names = metrics if isinstance(metrics, (list, tuple)) else [metrics]
        if self._source_of("metrics") and not (names and all(isinstance(m, str) and m.lower() in METRICS
                                                             for m in names)):
            raise ValueError(f"metrics: expected a list of Recall and NDCG (reported overall / in-sample / unseen), "
                             f"got {metrics!r}{self._source_of('metrics')}")
        if self._source_of("show_progress") and not isinstance(final.get("show_progress"), (bool, type(None))):
            raise ValueError(f"show_progress: expected true, false or ~, got {final['show_progress']!r}"
                             f"{self._source_of('show_progress')}")
        self._check_metric_keys(final)
        self._check_schedules(final)
        for key, names in CHOICES.items():
            value = final.get(key)
            name = value.lower() if isinstance(value, str) and key in ANY_CASE else value
            if self._source_of(key) and name not in names:
                shown = ", ".join("~" if n is None else str(n) for n in names)
                raise ValueError(f"{key}: expected one of {shown}, got {value!r}{self._source_of(key)}")
        path = final.get("pre_model_path")
        if self.model == "S3Rec" and final.get("train_stage") == "finetune" and not os.path.isfile(str(path or "")):
            raise ValueError(f"pre_model_path: train_stage: finetune starts from a pre-trained S3Rec checkpoint; "
                             f"expected an existing file, got {path!r}{self._source_of('pre_model_path')} (or "
                             f"train_stage: pretrain, which runs both stages in one run)")
        self._check_joint_grids(final)
        self._check_data_settings(final)
        clip = final.get("clip_grad_norm")
        if clip not in (None, {}) and not (isinstance(clip, dict) and "max_norm" in clip and _real(clip["max_norm"])
                                           and clip["max_norm"] > 0):
            raise ValueError(f"clip_grad_norm: expected ~ or {{}} (no clipping) or a mapping such as {{max_norm: 1.0}} "
                             f"with max_norm > 0, got {clip!r}{self._source_of('clip_grad_norm')}")
        if clip not in (None, {}) and final.get("enable_scaler"):
            raise ValueError(f"enable_scaler: RecBole's trainer clips the gradients while the scaler still multiplies "
                             f"them (no unscale_ first), so clip_grad_norm {clip} would clip far below max_norm; set "
                             f"one of the two{self._source_of('enable_scaler')}")

    def _check_schedules(self, final):
        """The learning-rate schedules (``lr_scheduler``, ``lr_min_ratio``, the warmup and total steps, SpecGR++'s
        stage-2 pair too) as the trainer reads them, with the source of the key at fault."""
        from recbole_specgr.trainer.schedule import read_schedule  # not at the top: the trainer package imports this

        saved = SavedConfig(final)
        for warmup_key, total_key in (("warmup_steps", "scheduler_total_steps"),
                                      ("specgrpp_finetune_warmup_steps", "specgrpp_finetune_total_steps")):
            try:
                read_schedule(saved, warmup_key, total_key)
            except ValueError as err:
                key = str(err).partition(":")[0]
                raise ValueError(f"{err}{self._source_of(key)}") from None

    def _check_metric_keys(self, final):
        """``valid_metric`` and the keys that choose by a result key (γ's metric, tiebreak and floors, SpecGR++'s
        stage-1 metric) must name a key the evaluation computes with ``metrics`` and ``topk``: found here, not after
        the dataset, the text embeddings and the semantic IDs are built."""
        metrics, topk = final.get("metrics"), final.get("topk")
        topk = [topk] if isinstance(topk, int) else topk  # RecBole reads topk: 10 as [10]
        if not isinstance(topk, (list, tuple)) or not all(isinstance(k, int) for k in topk):
            return  # refused by the range checks
        if final.get("valid_metric") is None:
            raise ValueError(f"valid_metric: expected a result key such as Recall@50, got ~"
                             f"{self._source_of('valid_metric')}")
        keys = list(METRIC_KEYS)
        if not any(final.get(key) is not None for key in THRESHOLD_GRIDS):  # γ is not chosen: the trainer reads none
            keys = [key for key in keys if not key.startswith("specgr_threshold_")]
        floors = final.get("specgr_threshold_floors") if "specgr_threshold_metric" in keys else None
        named = [(key, final.get(key)) for key in keys]
        named += [("specgr_threshold_floors", name) for name in (floors if isinstance(floors, dict) else {})]
        check_metrics([(key, value, self._source_of(key) or " (default)") for key, value in named], metrics, topk)

    def _check_data_settings(self, final):
        """Settings RecBole accepts but this package cannot run, refused before any data is read: ``loss_type: BPR``
        without negative samples (RecBole failed at the first batch with a bare KeyError 'neg_item_id'); UniSRec with
        another loss than CE; ``eval_args`` other than temporal order and full ranking (a mode was ignored without a
        word: every item is ranked); ``num_beams`` (β) below the largest cut-off; ``load_col`` not a mapping of file
        suffixes to field lists or '*' (tracebacks inside RecBole, or a string split into letters); an empty
        ``cache_dir`` / ``checkpoint_dir`` (files written into the working directory); a model of this package (they
        all read item texts) without ``text_fields``."""
        from recbole_specgr.utils import plugin_model_names  # the models import this module

        if not final.get("text_fields") and self.model in plugin_model_names():  # found once the data was loaded
            raise ValueError(f"text_fields: {self.model} reads item texts, and dataset '{self.dataset}' sets none "
                             f"(the item fields joined into each item's text, e.g. text_fields: [title, genre] in your "
                             f"dataset YAML; README, 'Your own data'){self._source_of('text_fields')}")
        loss = final.get("loss_type")
        negatives = final.get("train_neg_sample_args")
        if loss == "BPR" and (not isinstance(negatives, dict) or str(negatives.get("distribution")).lower() == "none"):
            raise ValueError(f"loss_type: BPR needs negative samples; set train_neg_sample_args, e.g. "
                             f"{{distribution: uniform, sample_num: 1}}, or use CE{self._source_of('loss_type')}")
        if self.model == "UniSRec" and loss != "CE":
            raise ValueError(f"loss_type: UniSRec trains with CE (a softmax over the seen items), got {loss!r}"
                             f"{self._source_of('loss_type')}")
        eval_args = final.get("eval_args")
        mode = eval_args.get("mode") if isinstance(eval_args, dict) else None
        modes = list(mode.values()) if isinstance(mode, dict) else [mode]
        if not modes or any(m != "full" for m in modes) or eval_args.get("order") != "TO":
            raise ValueError(f"eval_args: expected order: TO and mode: full (the split is by time, and every item is "
                             f"ranked: the inductive trainer samples no candidates), got {eval_args!r}"
                             f"{self._source_of('eval_args')}")
        beams, topk = final.get("num_beams"), final.get("topk")
        if isinstance(beams, int) and isinstance(topk, (list, tuple)) and topk and beams < max(topk):
            raise ValueError(f"num_beams: β = {beams} must be >= max(topk) = {max(topk)}"
                             f"{self._source_of('num_beams')}")
        load_col = final.get("load_col")
        if load_col is not None and not (isinstance(load_col, dict) and all(
                isinstance(suffix, str) and (fields == "*" or isinstance(fields, (list, tuple)) and fields
                                             and all(isinstance(f, str) for f in fields))
                for suffix, fields in load_col.items())):
            raise ValueError(f"load_col: expected a mapping of file suffixes to field lists (or '*', every column), "
                             f"e.g. {{inter: [user_id, item_id, timestamp], item: [item_id, title]}}, or ~ (every "
                             f"file's every column), got {load_col!r}{self._source_of('load_col')}")
        for key in ("cache_dir", "checkpoint_dir"):
            if key in final and not (isinstance(final[key], str) and final[key].strip()):
                raise ValueError(f"{key}: expected a folder path, got {final[key]!r}{self._source_of(key)}")

    def _check_joint_grids(self, final):
        """A grid of v_u, β or η (joint-ranking settings) that the user set, where every α tried is 0 (the paper's
        ranking only): its values were never tried, without a word. A β > 0 tried by a SpecGR++ without item texts
        (``item_text_input: False``): refused here, not once the semantic IDs were built."""
        text_grid = final.get("specgr_text_weight_grid")
        weights = text_grid if isinstance(text_grid, (list, tuple)) else [final.get("specgr_text_weight")]
        if (self.model == "SpecGRPP" and final.get("item_text_input") is False and not _paper_ranking_only(final)
                and any(_real(w) and w > 0 for w in weights)):
            key = "specgr_text_weight_grid" if isinstance(text_grid, (list, tuple)) else "specgr_text_weight"
            raise ValueError(text_prior_needs_texts(text_grid, final.get("specgr_text_weight"), self.model)
                             + self._source_of(key))
        if not _paper_ranking_only(final):
            return
        for key in JOINT_ONLY_GRIDS:
            values = final.get(key)
            if self._source_of(key) and isinstance(values, (list, tuple)) and _tried_jointly(key, values):
                raise ValueError(f"{key}: {values} is tried with every α > 0 only (the joint ranking), and every α "
                                 f"here is 0 (specgr_draft_weight_grid {final.get('specgr_draft_weight_grid')}, "
                                 f"specgr_draft_weight {final.get('specgr_draft_weight')}); add an α > 0 or drop "
                                 f"this grid{self._source_of(key)}")

    def _check_ranges(self, final):
        """Counts and sizes must be at least their :data:`MINIMUMS` (``--epochs=-1`` trained nothing and saved the
        untrained model; ``--hidden_size=0`` built an empty model); the error names the key and its source."""
        for key, minimum in MINIMUMS.items():
            value = final.get(key)
            if value is None:
                continue
            is_list = isinstance(value, (list, tuple))
            values = value if is_list else [value]
            kind = "a list of ints" if is_list or key in LIST_KEYS else "an int"
            if is_list and not values and key not in LIST_KEYS:  # topk: []; rqvae_hidden_sizes: [] is a linear encoder
                kind = "a non-empty list of ints"
            elif (is_list or key not in LIST_KEYS) and all(
                    isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in values):
                continue
            raise ValueError(f"{key}: expected {kind} >= {minimum}, got {value!r}{self._source_of(key)}")

    def _check_reals(self, final):
        """Rates, scales and probabilities in their range: a negative ``rqvae_commitment_weight`` trained without a
        word, ``layer_norm_eps: -1`` to NaN, ``dropout_prob: 1.5`` failed in torch without naming the key."""
        for keys, test, expected in ((POSITIVE_REALS, lambda v: v > 0, "a number > 0"),
                                     (NON_NEGATIVE_REALS, lambda v: v >= 0, "a number >= 0"),
                                     (PROBABILITIES, lambda v: 0 <= v < 1, "a probability in [0, 1)")):
            for key in keys:
                value = final.get(key)
                if value is not None and not (_real(value) and math.isfinite(value) and test(value)):
                    raise ValueError(f"{key}: expected {expected}, got {value!r}{self._source_of(key)}")

    def _check_no_nan(self):
        """No user value is NaN (YAML ``.nan``): every comparison with it is false, so a threshold of NaN accepted
        nothing and a temperature of NaN passed its ``<= 0`` check and trained to NaN."""
        for source, values in self._user_settings():
            for key, value in values.items():
                items = value if isinstance(value, (list, tuple)) else [value]
                if any(isinstance(v, float) and math.isnan(v) for v in items):
                    raise ValueError(f"{key}: expected a number, got {value!r} from {source}")

    def _user_settings(self):
        """(source, settings) of what the user gave, the highest precedence first."""
        return (("the command line", self.cmd_config_dict or {}), (CONFIG_DICT_SOURCE, self.variable_config_dict or {}),
                ("--config_files", self.file_config_dict or {}))

    def _source_of(self, key):
        """`` from <source>`` of a key the user gave, else ``""``."""
        return next((f" from {source}" for source, values in self._user_settings() if key in values), "")

    def _check_types(self):
        """A user value whose default (a YAML layer's) is a bool or a number must be one too, not text or ~; a
        ValueError names the key, where it came from and what was expected (e.g. ``--epochs=abc``)."""
        for source, values in self._user_settings():
            for key, value in values.items():
                default = self.internal_config_dict.get(key)
                expected = _expected_type(default)
                if expected is None or _fits(value, expected):
                    continue
                raise ValueError(f"{key}: expected {expected.__name__} (like its default {default!r}), got "
                                 f"{value!r} from {source}")

    def _set_default_parameters(self):
        data_path = self.final_config_dict.get("data_path")
        super()._set_default_parameters()
        # RecBole points ml-100k at its bundled copy even when the user names another folder; respect the user's
        # folder when it holds the files.
        if self.dataset == "ml-100k" and data_path and os.path.isfile(
            os.path.join(data_path, self.dataset, f"{self.dataset}.inter")
        ):
            self.final_config_dict["data_path"] = os.path.join(data_path, self.dataset)


class ComponentConfig(Config):
    """A :class:`Config` of ``config_dict`` and files only, for a model another one builds (SpecGR_Aux's verifier and
    drafter): the command line belongs to the run, which passes on what the component should get."""

    def _load_cmd_line(self):
        return {}


def check_no_component_keys(user_settings, final, dataset):
    """ValueError for a key the user set on SpecGR_Aux (``user_settings``; ``final``: its resolved settings) that
    only a component's model reads (``--hidden_size``, ``n_layers_enc``): components take their model keys from
    ``specgr_aux_<role>_config`` alone (:func:`~recbole_specgr.model.sequential_recommender.specgraux.component_config`),
    so it would change nothing; the message names the key to give it in."""
    own = set(model_defaults("SpecGRAux")) | shared_keys(dataset)
    for key in user_settings or {}:
        if key in own:
            continue
        roles = [role for role in ("verifier", "drafter") if key in _model_keys(final[f"specgr_aux_{role}_model"])]
        if roles:
            where = " / ".join(f"specgr_aux_{role}_config ({final[f'specgr_aux_{role}_model']})" for role in roles)
            raise ValueError(f"{key}: a setting of SpecGRAux's component model, not passed on from the composition's "
                             f"settings; give it in {where}, e.g. {{{key}: ...}}")


def _model_keys(model_name) -> set:
    """The keys of a model's YAML: this package's (with its base layers) or RecBole's."""
    if not isinstance(model_name, str):
        return set()
    if (PROPERTIES_DIR / "model" / f"{model_name}.yaml").is_file():
        return set(model_defaults(model_name))
    import recbole

    path = Path(recbole.__file__).resolve().parent / "properties" / "model" / f"{model_name}.yaml"
    if not path.is_file():
        return set()
    with open(path, encoding="utf-8") as f:
        return set(yaml.safe_load(f) or {})


def _plain_item(text):
    """An item of a bracketed command-line list that is no Python literal: a number where it reads as one, else the
    text without surrounding quotes."""
    text = text.strip().strip("'\"")
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def split_setting(arg):
    """``(key, value)`` of a ``--key=value`` argument (the value may hold ``=``), None for an argument of another
    form."""
    key, sep, value = arg[2:].partition("=")
    return (key, value) if arg.startswith("--") and sep and key else None


class UniqueKeyLoader(yaml.FullLoader):
    """``yaml.FullLoader`` (with the resolvers RecBole adds to it) refusing a key given twice in one mapping: YAML
    keeps the last one without a word. At module level, so a pickled :class:`Config` can refer to it."""

    def construct_mapping(self, node, deep=False):
        self.flatten_mapping(node)  # merge keys (<<: *anchor) first, as the base class does
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


# Set by run_recbole_specgr.py, whose command line holds only settings; a library caller's sys.argv may hold another
# program's options (pytest's --tb=short), which RecBole's reader takes for settings too.
CHECK_COMMAND_LINE_KEYS = False
# What errors call ``config_dict``: a command that builds it from its own command line (``compare``) says so.
CONFIG_DICT_SOURCE = "config_dict"


def known_keys() -> frozenset:
    """Every setting some model or dataset reads: the keys of RecBole's and this package's YAML files (all models,
    datasets and layers), RecBole's argument lists, and the keys read as ``config["key"]`` in RecBole's code and this
    package's, plus the entry point's own options. A key outside it is a typo (see :func:`check_known_keys`)."""
    return _known_keys(PROPERTIES_DIR)


@functools.lru_cache(maxsize=4)
def _known_keys(properties_dir: Path) -> frozenset:
    import recbole
    from recbole.utils import argument_list

    keys = {"model", "dataset", "config_files", "result_json"}
    for name in ("general_arguments", "training_arguments", "evaluation_arguments", "dataset_arguments"):
        keys.update(getattr(argument_list, name, ()))
    recbole_dir = Path(recbole.__file__).resolve().parent
    for root in (recbole_dir / "properties", properties_dir):
        for path in root.rglob("*.yaml"):
            with open(path, encoding="utf-8") as f:
                loaded = yaml.safe_load(f)
            if isinstance(loaded, dict):
                keys.update(loaded)
    read = re.compile(r"""config\[["']([A-Za-z_][A-Za-z_0-9]*)["']\]""")
    for root in (recbole_dir, Path(__file__).resolve().parent):
        for path in root.rglob("*.py"):
            keys.update(read.findall(path.read_text(encoding="utf-8")))
    return frozenset(keys)


def check_known_keys(settings, source: str) -> None:
    """ValueError for the first key of ``settings`` no model or dataset reads (a typo such as ``epoch``, which RecBole
    would otherwise ignore), naming ``source`` and the closest known keys."""
    known = known_keys()
    for key in settings:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=3, cutoff=0.75)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise ValueError(f"{key}: no model or dataset has this setting (from {source}){hint} (a key of your own "
                             f"model: strict_keys: False)")


def text_prior_needs_texts(text_grid, text_weight, model):
    """The error for a text-prior weight β > 0 on a ``model`` without item texts, naming the key that sets β:
    ``specgr_text_weight_grid`` when it is a list, else ``specgr_text_weight``."""
    key, value, fix = (("specgr_text_weight_grid", text_grid, "[0] or ~") if isinstance(text_grid, (list, tuple))
                       else ("specgr_text_weight", text_weight, "0"))
    return (f"{key}: {value} needs the item texts of the text prior, which this {model} does not keep (SpecGRPP: "
            f"item_text_input: True); set it to {fix}")


def check_overrides(saved, overrides, source: str) -> None:
    """ValueError naming the key and ``source`` unless every key of ``overrides`` (changes to a ``saved`` checkpoint
    config, applied without a :class:`Config`) is a known setting (unless the run had ``strict_keys: False``) and
    holds a bool or a number where the key's default for the saved model is one, as :class:`Config` checks user
    values (``specgr_threshold="abc"`` failed in float())."""
    if not overrides:
        return
    if saved.get("strict_keys", True):
        check_known_keys(overrides, source)
    defaults = {**shared_defaults(saved.get("dataset")), **model_defaults(saved["model"])}
    for key, value in overrides.items():
        default = defaults.get(key)
        expected = _expected_type(default)
        if expected is not None and not _fits(value, expected):
            raise ValueError(f"{key}: expected {expected.__name__} (like its default {default!r}), got {value!r} "
                             f"from {source}")


# Counts and sizes, with the least value that makes sense (0 epochs: evaluate a loaded checkpoint as it is; eval_step 0:
# train without validation; stopping_step 0: stop at the first validation without a gain).
MINIMUMS = {
    "epochs": 0, "eval_step": 0, "stopping_step": 0, "MAX_ITEM_LIST_LENGTH": 1, "train_batch_size": 1,
    "eval_batch_size": 1, "topk": 1, "hidden_size": 1, "inner_size": 1, "n_layers": 1, "n_heads": 1,
    "n_layers_enc": 1, "n_layers_dec": 1, "d_kv": 1, "text_batch_size": 1, "rqvae_latent_dim": 1, "rqvae_epochs": 0,
    "rqvae_batch_size": 1, "rqvae_hidden_sizes": 1, "specgrpp_projection_size": 1, "specgrpp_pretrain_epochs": 0,
    "specgrpp_finetune_epochs": 0, "specgrpp_finetune_warmup_steps": 0, "specgrpp_finetune_total_steps": 1,
    "n_exps": 1, "rel_pos_buckets": 4, "rel_pos_max_distance": 1, "textsim_last_n": 1, "specgr_text_last_n": 1,
    "specgr_novelty_last_n": 1, "eval_workers": 1, "pretrain_epochs": 0, "num_beams": 1, "specgr_draft_size": 0,
    "specgrpp_cl_negatives": 0, "specgrpp_num_candidates": 0, "warmup_steps": 0, "rqvae_num_levels": 1,
    "rqvae_codebook_size": 2, "plm_size": 1,
}


# The grids of the inference setting chosen on validation: with any of them set, γ is chosen by specgr_threshold_*.
THRESHOLD_GRIDS = ("specgr_threshold_grid", "specgr_unseen_threshold_grid", "specgr_draft_weight_grid",
                   "specgr_unseen_score_grid", "specgr_text_weight_grid", "specgr_novelty_weight_grid")

# Keys that name a result key (e.g. recall@50, unseen/ndcg@10), checked against metrics × topk.
METRIC_KEYS = ("valid_metric", "specgr_threshold_metric", "specgr_threshold_tiebreak", "specgrpp_pretrain_valid_metric")

# Keys that hold a list (RecBole reads ``topk: 10`` as [10], but a model iterating an int fails far from the key).
LIST_KEYS = ("rqvae_hidden_sizes",)

# Rates, scales and weights: finite, > 0 / >= 0; dropout probabilities in [0, 1).
POSITIVE_REALS = ("learning_rate", "rqvae_learning_rate", "specgrpp_finetune_learning_rate", "initializer_range",
                  "layer_norm_eps", "specgrpp_temperature", "temperature")
NON_NEGATIVE_REALS = ("weight_decay", "rqvae_commitment_weight", "specgrpp_lambda_cl", "specgrpp_lambda_ce",
                      "aap_weight", "mip_weight", "map_weight", "sp_weight", "specgr_draft_weight",
                      "specgr_text_weight", "specgr_novelty_weight")
PROBABILITIES = ("dropout_prob", "hidden_dropout_prob", "attn_dropout_prob", "adaptor_dropout_prob")

# Names a user value must be one of: RecBole's optimizers (another name fell back to Adam with a log warning; RecBole
# lowercases it, hence ANY_CASE) and its transformer's activations (looked up as written); the others were refused
# only once the model or trainer was built, after the text embeddings and semantic IDs.
CHOICES = {
    "learner": ("adam", "adamw", "sgd", "adagrad", "rmsprop", "sparse_adam"),
    "hidden_act": ("gelu", "relu", "swish", "tanh", "sigmoid"),
    "loss_type": ("CE", "BPR"),  # RecBole's sequential models raise NotImplementedError at their first batch otherwise
    "state": ("info", "debug", "warning", "error", "critical", None),  # RecBole logged at INFO for any other name
    "specgr_drafting_backend": BACKENDS,
    "specgr_faiss_index": FAISS_INDEXES,
    "rqvae_method": METHODS,
    "train_stage": ("pretrain", "finetune"),  # S3Rec: a bare AssertionError in RecBole otherwise
    "pooling_mode": ("mean", "max", "sum"),  # FDSA's feature pooling: an AssertionError traceback otherwise
}
ANY_CASE = ("learner", "state")


def _real(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _expected_type(default):
    """The type a user value of a key must have, judged from its default: bool, int, float, or None (any; lists too,
    since RecBole takes e.g. ``topk: 10`` for ``[10]``)."""
    for kind in (bool, int, float):
        if isinstance(default, kind):
            return kind
    return None


def _fits(value, expected):
    if expected is bool:
        return isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# Keys RecBole derives from the others (enums, the device and its process group): never saved, set again where a
# config is rebuilt.
DERIVED_KEYS = ("MODEL_TYPE", "MODEL_INPUT_TYPE", "eval_type", "device", "local_rank", "single_spec")

# Grids tried with every α > 0 only (the joint ranking); a grid of zeros (no text or novelty prior) is no grid.
JOINT_ONLY_GRIDS = ("specgr_unseen_score_grid", "specgr_text_weight_grid", "specgr_novelty_weight_grid")


def _paper_ranking_only(config) -> bool:
    """True when every α ``config`` tries is 0 (its grid, else ``specgr_draft_weight``)."""
    weights = config.get("specgr_draft_weight_grid")
    weights = weights if isinstance(weights, (list, tuple)) else [config.get("specgr_draft_weight") or 0]
    return all(_real(w) and w == 0 for w in weights)


def _tried_jointly(key, values) -> bool:
    return key == "specgr_unseen_score_grid" or any(v != 0 for v in values)


# Keys added after checkpoints were already saved, with the value that gives those checkpoints' behaviour: a saved
# config without the key gets this value, not today's default, so an old checkpoint recommends as it reported.
KEYS_ADDED_LATER = {"specgr_rank_all_unseen": False}


def _plain(value):
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


def plain_config(config) -> dict:
    """The resolved settings of ``config`` as plain data (str, numbers, bools, lists, dicts), for checkpoints that
    load with ``torch.load(weights_only=True)``; :data:`DERIVED_KEYS` are left out."""
    return {key: _plain(value) for key, value in config.final_config_dict.items() if key not in DERIVED_KEYS}


class SavedConfig(dict):
    """A checkpoint's :func:`plain_config`, readable like RecBole's ``Config`` (a missing key reads as None), for
    rebuilding its model without the dataset or the command line."""

    def __getitem__(self, key):
        return self.get(key)


# The settings that decide the inductive split: which rows are training rows, hence which items are seen.
SPLIT_KEYS = ("dataset", "split_timestamps", "split_time_quantiles", "cold_start_items")


def check_same_split(key, path, checkpoint, config, seen_item_mask=None,
                     remedy="train it with this run's split settings"):
    """ValueError unless the checkpoint ``path`` (the value of ``key``) was trained on the split of ``config``: the
    same :data:`SPLIT_KEYS` (those it records; ``split_time_quantiles`` only where ``split_timestamps`` is ~) and,
    where both have one, the same ``seen_item_mask`` [n]. Weights of another split were trained on rows of this run's
    valid / test period; semantic IDs that differ alone (same split) are the loading model's business."""
    saved = SavedConfig(checkpoint.get("config") or {})
    by_timestamps = saved["split_timestamps"] is not None and config["split_timestamps"] is not None
    differ = [f"{name} {_plain(saved[name])!r} there, {_plain(config[name])!r} here" for name in SPLIT_KEYS
              if name in saved and not (by_timestamps and name == "split_time_quantiles")
              and _split_value(saved[name]) != _split_value(config[name])]
    theirs = (checkpoint.get("state_dict") or {}).get("seen_item_mask")
    if seen_item_mask is not None and theirs is not None \
            and not torch.equal(theirs.cpu().bool(), seen_item_mask.cpu().bool()):
        differ.append("seen_item_mask differs")
    if differ:
        raise ValueError(f"{key}: {path} was trained on another split ({'; '.join(differ)}); {remedy}")


def _split_value(value):
    """A split setting as compared by :func:`check_same_split`: a query's spacing does not count
    (``year >= 1998`` is ``year>=1998``)."""
    return "".join(value.split()) if isinstance(value, str) else _plain(value)


def config_from_saved(saved: dict, **overrides) -> Config:
    """A full :class:`Config` rebuilt from a checkpoint's :func:`plain_config` (plus ``overrides``), e.g. to reload its
    dataset: the saved values that differ from the model's and dataset's defaults are given as ``config_dict`` (keys
    RecBole normalises, such as ``train_neg_sample_args``, are equal to the defaults and so not given again); a key of
    :data:`KEYS_ADDED_LATER` the checkpoint predates takes its value from there, and the joint-ranking grids of a run
    that tried the paper's ranking only (:data:`JOINT_ONLY_GRIDS`, never used there) are not given again."""
    defaults = plain_config(Config(model=saved["model"], dataset=saved["dataset"]))
    settings = {key: value for key, value in saved.items()
                if key not in DERIVED_KEYS and defaults.get(key, object()) != value}
    settings.update({key: value for key, value in KEYS_ADDED_LATER.items() if key not in saved and key in defaults})
    if _paper_ranking_only({**saved, **overrides}):  # its joint-ranking grids were never tried and will not be: not
        for key in JOINT_ONLY_GRIDS:  # given again (today's defaults may differ, and a grid given with every α 0 is
            if key not in overrides:  # refused as a mistake)
                settings.pop(key, None)
    settings.update(overrides)
    data_path = settings.get("data_path")
    if data_path and os.path.basename(os.path.normpath(data_path)) == saved.get("dataset"):
        settings["data_path"] = os.path.dirname(os.path.normpath(data_path))  # RecBole appends the dataset again
    return Config(model=saved["model"], dataset=saved["dataset"], config_dict=settings)


def shared_keys(dataset: str) -> set:
    """The keys of the layers every model shares (:func:`shared_defaults`), as opposed to the keys of one model's
    YAML."""
    return set(shared_defaults(dataset))


def shared_defaults(dataset) -> dict:
    """The values of the layers every model shares: RecBole's ``overall.yaml`` and dataset defaults, this package's
    ``overall.yaml`` and ``properties/dataset/<dataset>.yaml`` (run, data, split, tokenizer, training-loop and
    evaluation settings), each layer over the ones before it."""
    import recbole

    recbole_properties = Path(recbole.__file__).resolve().parent / "properties"
    merged = {}
    for path in (recbole_properties / "overall.yaml", recbole_properties / "dataset" / "sample.yaml",
                 PROPERTIES_DIR / "overall.yaml", PROPERTIES_DIR / "dataset" / f"{dataset}.yaml"):
        if path.is_file():
            with open(path, encoding="utf-8") as f:
                merged.update(yaml.safe_load(f) or {})
    return merged


def model_defaults(model: str) -> dict:
    """The keys of ``properties/model/<model>.yaml`` with its ``base_configs`` layers under them, as a plain dict
    (for building a model without a dataset: tests, benchmarks)."""
    model_path = PROPERTIES_DIR / "model" / f"{model}.yaml"
    merged = {}
    for path in (*base_config_paths(model_path), model_path):
        with open(path, encoding="utf-8") as f:
            merged.update(yaml.safe_load(f) or {})
    return merged
