"""
recbole_specgr.quick_start
##########################
config → seed → logger → dataset → dataloaders → model → trainer → fit → evaluate, for plugin and RecBole
sequential models (any other model is refused before anything runs: it would not read the inductive split).
Never imports ``recbole.quick_start`` (it imports ray).
"""

import json
import os
import sys
import time
from logging import getLogger

from recbole_specgr import compat  # noqa: F401  (must precede recbole imports)
from recbole.data import data_preparation
from recbole.utils import init_logger, init_seed

from recbole_specgr.allocator import keep_freed_memory
from recbole_specgr.atomic import atomic_write, check_writable
from recbole_specgr.config import Config
from recbole_specgr.evaluation import format_breakdown, nest_result
from recbole_specgr.trainer.threshold_tuning import setting_keys
from recbole_specgr.utils import check_sequential_model, create_dataset, get_model, get_trainer


def run_recbole_specgr(model=None, dataset=None, config_file_list=None, config_dict=None, saved=True,
                       result_json=None):
    """Train ``model`` on ``dataset`` with early stopping on validation, evaluate on test.

    Returns:
        dict: ``model, dataset, n_params`` (trainable), ``n_params_all`` (frozen ones too), ``train_time_s,
        eval_time_s, checkpoint, config, valid, test`` where ``valid``/``test`` are ``{"overall": {...}, "in_sample": {...}, "unseen": {...}}`` (metrics plus
        ``n_cases``); SpecGR runs with ``specgr_threshold_grid`` add the chosen ``specgr_threshold`` and the
        validation ``threshold_sweep``; also written to ``result_json`` when given.
    """
    config = Config(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict)
    check_sequential_model(config["model"])
    if result_json:  # written at the end: a path that cannot be written fails now, not after training
        check_writable(result_json)
    if config["show_progress"] is None:  # auto: bars on a terminal, the per-epoch summary lines alone elsewhere
        config["show_progress"] = sys.stderr.isatty()
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    logger = getLogger()
    logger.debug(config)
    if config["keep_freed_memory"]:
        keep_freed_memory()

    dataset = create_dataset(config)
    logger.info(dataset)
    train_data, valid_data, test_data = data_preparation(config, dataset)

    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    logger.debug(model)
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in model.parameters())
    logger.info(f"{config['model']}: {n_trainable:,} trainable parameters ({n_all:,} with the frozen ones; the full "
                f"module dump is logged at debug level)")
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)

    start = time.perf_counter()
    _, best_valid_result = trainer.fit(train_data, valid_data, saved=saved, show_progress=config["show_progress"])
    train_time = time.perf_counter() - start + getattr(trainer, "resumed_train_time_s", 0.0)  # earlier processes of a resumed run
    start = time.perf_counter()
    test_result = trainer.evaluate(test_data, load_best_model=saved, show_progress=config["show_progress"])
    eval_time = time.perf_counter() - start

    result = {
        "model": config["model"],
        "dataset": config["dataset"],
        "n_params": n_trainable,  # RecBole's count; SpecGR++'s frozen stage-2 item tower is in n_params_all only
        "n_params_all": n_all,
        "train_time_s": round(train_time, 3),
        "eval_time_s": round(eval_time, 3),
        "checkpoint": _saved_file(trainer) if saved else None,
        "eval_exclude_history": bool(config["eval_exclude_history"]),
        "config": _jsonable(config.final_config_dict),
        "valid": nest_result(best_valid_result or {}),
        "test": nest_result(test_result or {}),
    }
    result["learning_curve"] = _jsonable(getattr(trainer, "learning_curve", []))
    if getattr(trainer, "threshold_sweep", None):  # γ chosen on validation (SpecGR models with a threshold grid)
        result.update(setting_keys(model.specgr_setting))
        result["threshold_sweep"] = trainer.threshold_sweep
    for split in ("valid", "test"):
        if result[split]["overall"]:
            logger.info(format_breakdown(result[split], f"[{split}] {result['model']} on {result['dataset']}"))
    if result_json:
        write_json_atomic(result_json, result)
    return result


def objective_function(config_dict=None, config_file_list=None, saved=True):
    """The same run without a result file, for tests and hyper-parameter search."""
    return run_recbole_specgr(config_file_list=config_file_list, config_dict=config_dict, saved=saved)


def write_json_atomic(path, obj):
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=2)


def _saved_file(trainer):
    """Absolute path of what the trainer saved (checkpoint; RQVAE: the semantic-ID cache), None if nothing."""
    path = getattr(trainer, "saved_model_file", None)
    return os.path.abspath(path) if path and os.path.exists(path) else None


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
