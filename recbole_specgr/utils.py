"""
recbole_specgr.utils
####################
Registry: plugin classes first, RecBole's as fallback (RecBole-GNN's pattern).

- a model ``Name`` lives in ``recbole_specgr/model/sequential_recommender/<name>.py``;
- its trainer is ``<Name>Trainer`` in :mod:`recbole_specgr.trainer`, else :class:`InductiveTrainer` for sequential
  models, else RecBole's choice;
- sequential models read :class:`InductiveSequentialDataset`.
"""

import importlib

from recbole.data import create_dataset as recbole_create_dataset
from recbole.utils import FeatureSource, FeatureType, ModelType
from recbole.utils import get_model as recbole_get_model
from recbole.utils import get_trainer as recbole_get_trainer

PLUGIN_MODEL_PACKAGE = "recbole_specgr.model.sequential_recommender"


def plugin_model_names():
    """Names of the models this package adds."""
    from importlib import resources

    names = []
    for entry in resources.files(PLUGIN_MODEL_PACKAGE).iterdir():
        if entry.name.endswith(".py") and not entry.name.startswith("_"):
            module = importlib.import_module(f"{PLUGIN_MODEL_PACKAGE}.{entry.name[:-3]}")
            names += [n for n, obj in vars(module).items()
                      if isinstance(obj, type) and n.lower() == entry.name[:-3] and obj.__module__ == module.__name__]
    return sorted(names)


def get_model(model_name):
    """The model class called ``model_name``: this package's, else RecBole's."""
    try:
        module = importlib.import_module(f"{PLUGIN_MODEL_PACKAGE}.{model_name.lower()}")
    except ModuleNotFoundError as err:
        if err.name != f"{PLUGIN_MODEL_PACKAGE}.{model_name.lower()}":
            raise
    else:
        if hasattr(module, model_name):
            return getattr(module, model_name)
    try:
        return recbole_get_model(model_name)
    except (ValueError, ModuleNotFoundError):  # RecBole's search imports exlib_recommender (lightgbm, xgboost)
        raise ValueError(
            f"model '{model_name}' is neither a recbole-specgr model {plugin_model_names()} nor a RecBole model"
        ) from None


def check_sequential_model(model_name):
    """ValueError unless ``model_name`` is a sequential recommender: only those read the inductive split (RecBole's
    general, context-aware and knowledge models split and score the data their own way, without in-sample / unseen
    results). Call it before anything is trained."""
    model_class = get_model(model_name)
    if model_class.type != ModelType.SEQUENTIAL:
        raise ValueError(
            f"model '{model_name}': expected a sequential model (this package's {', '.join(plugin_model_names())}, or "
            f"a RecBole SequentialRecommender: SASRec, FDSA, S3Rec, ...), got a {model_class.type.name.lower()} "
            f"recommender, which does not read the inductive split"
        )


def get_trainer(model_type, model_name):
    """``<Model>Trainer`` from :mod:`recbole_specgr.trainer`, else InductiveTrainer (sequential) or RecBole's."""
    trainers = importlib.import_module("recbole_specgr.trainer")
    if hasattr(trainers, model_name + "Trainer"):
        return getattr(trainers, model_name + "Trainer")
    if model_type == ModelType.SEQUENTIAL:
        return trainers.InductiveTrainer
    return recbole_get_trainer(model_type, model_name)


def create_dataset(config):
    """:class:`InductiveSequentialDataset` for sequential models (after preparing the data folder), checked against the
    settings that name its fields and cut-offs (:func:`check_feature_fields`, :func:`check_cutoffs`), else RecBole's."""
    if config["MODEL_TYPE"] != ModelType.SEQUENTIAL:
        return recbole_create_dataset(config)
    if config["benchmark_filename"]:
        raise ValueError(
            "benchmark_filename: sequential models read one <dataset>.inter and split it by time (split_timestamps / "
            "split_time_quantiles); pre-split files are read for RecBole's non-sequential models only"
        )
    from recbole_specgr.data.dataset import InductiveSequentialDataset
    from recbole_specgr.data.prepare import prepare_data_path

    prepare_data_path(config)
    dataset = InductiveSequentialDataset(config)
    check_feature_fields(config, dataset)
    check_cutoffs(config, dataset)
    return dataset


# Keys naming item fields that RecBole's feature-aware models read (FDSA, S3Rec): an unknown name failed with a bare
# KeyError when the model was built.
FEATURE_FIELD_KEYS = {"FDSA": "selected_features", "S3Rec": "item_attribute"}


def check_feature_fields(config, dataset):
    """ValueError naming the key unless the fields the model's :data:`FEATURE_FIELD_KEYS` key lists are item fields
    the dataset loaded, of token or token_seq type."""
    key = FEATURE_FIELD_KEYS.get(config["model"])
    value = config[key] if key else None
    if value is None:
        return
    if (key == "item_attribute") != isinstance(value, str):  # S3Rec reads one field, FDSA a list of them
        expected = "an item field name" if key == "item_attribute" else "a list of item field names"
        raise ValueError(f"{key}: expected {expected}, got {value!r}")
    names = [value] if isinstance(value, str) else list(value)
    loaded = sorted(field for field in dataset.field2type if dataset.field2source.get(field) == FeatureSource.ITEM)
    unknown = [name for name in names if name not in loaded]
    if unknown:
        raise ValueError(f"{key}: {unknown} are not item fields of '{config['dataset']}' (loaded: {loaded})")
    numerical = set(config["numerical_features"] or []) if config["model"] == "FDSA" else set()
    categorical_types = (FeatureType.TOKEN, FeatureType.TOKEN_SEQ)
    float_types = (FeatureType.FLOAT, FeatureType.FLOAT_SEQ)
    unusable = [name for name in names if dataset.field2type[name] not in categorical_types
                and not (name in numerical and dataset.field2type[name] in float_types)]
    if unusable:  # FDSA embedded none of them and failed in its first forward (torch.cat of an empty list)
        also = " (or float fields also listed in numerical_features)" if config["model"] == "FDSA" else ""
        raise ValueError(f"{key}: {unusable} of '{config['dataset']}' are not token or token_seq fields{also}; "
                         f"{config['model']} embeds categorical item fields")


def check_cutoffs(config, dataset):
    """ValueError unless every ``topk`` cut-off is at most the number of items (a larger one failed in ``torch.topk``
    at the first evaluation, after a checkpoint may have been written)."""
    n_items = dataset.item_num - 1  # id 0 is padding
    too_large = [k for k in config["topk"] if k > n_items]
    if too_large:
        raise ValueError(f"topk: cut-offs {too_large} exceed the {n_items} items of '{config['dataset']}'; expected "
                         f"cut-offs of at most {n_items}")

