"""
recbole_specgr.compare
######################
Side-by-side comparison of models on one dataset and split: runs each model through
:func:`recbole_specgr.quick_start.run_recbole_specgr` with the same configuration (hence the same seed and split) and
writes one result JSON per model plus a table (``<out>.md`` and ``<out>.csv``) in the layout of SpecGR's Table 3:
overall / in-sample / unseen × the results' metrics (by default Recall@10, NDCG@10, Recall@50, NDCG@50), with
#params (trainable) and training time.

Command line::

    python -m recbole_specgr.compare --models SASRec,FDSA,S3Rec,UniSRec --dataset ml-100k \\
        [--config_files a.yaml b.yaml] [--key=value ...] --out results/compare_ml-100k

Reference:
    SpecGR, arXiv:2410.02939, Table 3 (in-sample / unseen breakdown).
"""

import argparse
import csv
import json
import math
import os
import shlex
import statistics
import sys
from logging import getLogger

from recbole_specgr.atomic import atomic_write
from recbole_specgr.cli import error_line

MISSING = "–"
SUBSETS = (("overall", "overall"), ("in_sample", "in-sample"), ("unseen", "unseen"))  # (result key, label)
TABLE3_METRICS = ("recall@10", "ndcg@10", "recall@50", "ndcg@50")  # the columns when no result holds a metric
SHORT_NAMES = {"recall": "R", "ndcg": "N"}
PARAMS_COLUMN, TIME_COLUMN = "#params", "train time (s)"
LOADED_KEYS = ("init_checkpoint", "specgr_aux_verifier_checkpoint", "specgr_aux_drafter_checkpoint")


def metric_keys(results, split="test"):
    """The metric keys (``recall@10``, …) the results hold in ``split``, by cut-off then metric (Recall before NDCG):
    what their runs' ``metrics`` and ``topk`` computed; :data:`TABLE3_METRICS` when they hold none."""
    keys = {key for result in results for subset, _ in SUBSETS
            for key in ((result.get(split) or {}).get(subset) or {}) if "@" in key}
    order = list(SHORT_NAMES)

    def position(key):
        name, _, k = key.partition("@")
        return (int(k) if k.isdigit() else math.inf, order.index(name) if name in order else len(order), key)

    return sorted(keys, key=position) if keys else list(TABLE3_METRICS)


def table_columns(keys=TABLE3_METRICS):
    """Column labels, in order: ``model``, a subset × metric column per subset and key of ``keys`` (see
    :func:`metric_keys`; e.g. ``overall R@10``), ``#params``, ``train time (s)``."""
    def short(key):
        name, _, k = key.partition("@")
        return f"{SHORT_NAMES.get(name, name)}@{k}"

    metric_columns = [f"{label} {short(key)}" for _, label in SUBSETS for key in keys]
    return ["model"] + metric_columns + [PARAMS_COLUMN, TIME_COLUMN]


def _is_missing(value):
    return value is None or (isinstance(value, float) and math.isnan(value))


def _load(result):
    if isinstance(result, dict):
        return result
    with open(result, "r", encoding="utf-8") as f:
        return json.load(f)


def row_label(result):
    """The run's ``name`` when it has one (a benchmark plan's run name), else the model name; TIGER with
    ``tiger_c_unseen_share`` > 0 is the paper's TIGER_C."""
    if result.get("name"):
        return result["name"]
    model = result.get("model", MISSING)
    share = (result.get("config") or {}).get("tiger_c_unseen_share")
    if model == "TIGER" and share is not None and float(share) > 0:
        return "TIGER_C"
    return model


def table_rows(results, split="test", keys=None):
    """One row per result: a list of raw values (``None`` where missing), aligned with :func:`table_columns` of
    ``keys`` (default: :func:`metric_keys` of these results)."""
    keys = metric_keys(results, split) if keys is None else keys
    rows = []
    for result in results:
        nested = result.get(split) or {}
        row = [row_label(result)]
        for subset, _ in SUBSETS:
            values = nested.get(subset) or {}
            row += [values.get(key) for key in keys]
        row += [result.get("n_params"), result.get("train_time_s")]
        rows.append([None if _is_missing(v) else v for v in row])
    return rows


def loaded_note(results):
    """The lines under a table that say which rows started from other runs' checkpoints (:data:`LOADED_KEYS`):
    their training time is not in the row's ``train time (s)``, which counts that run alone. [] when none did."""
    loaded = {}
    for result in results:
        keys = [key for key in LOADED_KEYS if (result.get("config") or {}).get(key)]
        if keys:
            loaded.setdefault(row_label(result), keys)
    if not loaded:
        return []
    rows = "; ".join(f"{label} ({', '.join(keys)})" for label, keys in loaded.items())
    return ["", f"{TIME_COLUMN} counts each run's own training, not that of the checkpoints it started from: {rows}."]


def case_counts(results, split="test"):
    """``{subset label: [distinct case counts in order of appearance]}``; one value each when the split is shared."""
    counts = {}
    for subset, label in SUBSETS:
        seen = []
        for result in results:
            n = ((result.get(split) or {}).get(subset) or {}).get("n_cases")
            if n is not None and n not in seen:
                seen.append(n)
        counts[label] = seen
    return counts


def _format(value, column, markdown):
    if value is None:
        return MISSING
    if column == "model":
        return str(value)
    if column == PARAMS_COLUMN:
        return f"{int(value):,}" if markdown else str(int(value))
    if column == TIME_COLUMN:
        return f"{float(value):.1f}"
    return f"{float(value):.4f}"


def write_table(result_jsons, out_prefix, split="test", made_by=None, failed=()):
    """Write ``<out_prefix>.md`` and ``<out_prefix>.csv`` comparing the given results.

    Args:
        result_jsons (list[str | os.PathLike | dict]): result dicts of
            :func:`~recbole_specgr.quick_start.run_recbole_specgr`, or paths of their JSON files.
        out_prefix (str): path without extension.
        split (str): ``"test"`` or ``"valid"``.
        made_by (str, optional): the command that makes the table, stated under its title.
        failed (sequence of str): models that were run for this table but failed, named under it.

    Returns:
        (str, str): the Markdown and CSV paths. Missing values (a subset without cases, an absent metric) are "–".
    """
    if split not in ("test", "valid"):
        raise ValueError(f"split must be 'test' or 'valid', got {split!r}")
    results = [_load(r) for r in result_jsons]
    keys = metric_keys(results, split)
    columns, rows = table_columns(keys), table_rows(results, split, keys)
    counts = case_counts(results, split)
    if any(len(v) > 1 for v in counts.values()):
        getLogger().warning(f"compare: the results do not share one {split} split (case counts {counts})")
    datasets = sorted({str(r.get("dataset")) for r in results if r.get("dataset")})

    md_path, csv_path = f"{out_prefix}.md", f"{out_prefix}.csv"
    counts_line = " · ".join(
        f"{label} {'/'.join(f'{n:,}' for n in ns) if ns else MISSING}" for label, ns in counts.items()
    )
    lines = [
        f"# {', '.join(datasets) or 'results'} — {split}",
        "",
        *made_by_lines(made_by),
        f"{split} cases: {counts_line}",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "|".join([":---"] + ["---:"] * (len(columns) - 1)) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(_format(v, c, True) for v, c in zip(row, columns)) + " |")
    lines += loaded_note(results)
    if failed:
        lines += ["", f"Failed, so not in the table: {', '.join(failed)} (the run's log has the reason)."]
    with atomic_write(md_path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    with atomic_write(csv_path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows([_format(v, c, False) for v, c in zip(row, columns)] for row in rows)
    return md_path, csv_path


def seed_cell(values, n_seeds, column):
    """One metric of one model over its seeds: ``(markdown cell, [csv mean, csv sample std])``.

    The Markdown cell is "mean ± std"; with one value the spread is unknown and shows as "mean ± –" (never
    "± 0.0000"); with fewer values than the model's seeds (a metric missing in some) it ends in "(n=<values>)".
    ``#params`` and the training time show the mean only. No values: "–".
    """
    if not values:
        return MISSING, [MISSING, MISSING]
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else None
    spread = MISSING if std is None else f"{std:.4f}"
    if column == PARAMS_COLUMN:
        md = f"{int(mean):,}"
    elif column == TIME_COLUMN:
        md = f"{mean:.1f}"
    else:
        md = f"{mean:.4f} ± {spread}"
    if len(values) < n_seeds:
        md += f" (n={len(values)})"
    return md, [f"{mean:.6f}", MISSING if std is None else f"{std:.6f}"]


def write_seed_table(results_by_seed, out_prefix, split="test", made_by=None):
    """Write ``<out_prefix>.md`` / ``.csv`` with the mean ± sample std over seeds of every metric column, one row per
    model over the seeds that have it (the ``seeds`` column counts them; models in first-seen order). A cell's format
    is :func:`seed_cell`'s: "± –" where there is one value, "(n=2)" where fewer values than the row's seeds.

    Args:
        results_by_seed (dict[int, list]): per seed, the results (dicts or JSON paths) available for that seed.
        out_prefix (str): path without extension.
        made_by (str, optional): the command that makes the table, stated under its title.

    Returns:
        (str, str): the Markdown and CSV paths.
    """
    seeds = sorted(results_by_seed)
    results_of_seed = {seed: [_load(r) for r in results_by_seed[seed]] for seed in seeds}
    loaded = [result for seed in seeds for result in results_of_seed[seed]]
    keys = metric_keys(loaded, split)
    rows_by_model = {}  # label -> its table row under each seed that has it
    for seed in seeds:
        for row in table_rows(results_of_seed[seed], split, keys):
            rows_by_model.setdefault(row[0], []).append(row)
    columns = table_columns(keys)
    md_rows, csv_rows = [], []
    for label, cells in rows_by_model.items():
        md, flat = [], []
        for k, column in enumerate(columns[1:], start=1):
            cell, stats = seed_cell([row[k] for row in cells if row[k] is not None], len(cells), column)
            md.append(cell)
            flat += stats
        md_rows.append(f"| {label} | {len(cells)} | " + " | ".join(md) + " |")
        csv_rows.append([label, len(cells)] + flat)
    columns = [columns[0], "seeds"] + columns[1:]
    md_path, csv_path = f"{out_prefix}.md", f"{out_prefix}.csv"
    lines = [f"# {split}: mean ± std over seeds {', '.join(map(str, seeds))}", "", *made_by_lines(made_by),
             "| " + " | ".join(columns) + " |", "|" + "|".join([":---"] + ["---:"] * (len(columns) - 1)) + "|",
             *md_rows, *loaded_note(loaded)]
    with atomic_write(md_path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    with atomic_write(csv_path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["model", "seeds"] + [f"{c} {stat}" for c in columns[2:] for stat in ("mean", "std")])
        writer.writerows(csv_rows)
    return md_path, csv_path


def made_by_lines(command):
    """The lines stating the command that made a report (none without one), under its title."""
    return [f"Made by `{command}`.", ""] if command else []


def parse_args(argv=None):
    """``(args, config_dict)``: the named options and the ``--key=value`` overrides (values as strings, ``~`` as None;
    RecBole's ``Config`` converts the others)."""
    parser = argparse.ArgumentParser(
        prog="python -m recbole_specgr.compare",
        description="Run models on one dataset and split; write result JSONs and an overall / in-sample / unseen table.",
        epilog="Any setting as --key=value applies to every model (e.g. --epochs=5 --seed=2021), as in "
               "run_recbole_specgr.py.",
    )
    parser.add_argument("--models", "-m", required=True, help="comma-separated model names")
    parser.add_argument("--dataset", "-d", required=True)
    parser.add_argument("--config_files", nargs="+", default=None,
                        help="YAML files, in order (several arguments, or one separated by spaces or commas)")
    parser.add_argument(
        "--out", default=None, help="output prefix: <out>.md, <out>.csv, <out>_<Model>.json (default: "
        "results/compare_<dataset>)"
    )
    parser.add_argument("--split", default="test", choices=["test", "valid"], help="split shown in the table")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    args, unknown = parser.parse_known_args(argv)
    from recbole_specgr.config import split_setting

    config_dict = {}
    for arg in unknown:
        setting = split_setting(arg)
        if setting is None:
            parser.error(f"unrecognised argument {arg!r}: expected --key=value")
        key, value = setting
        config_dict[key] = None if value == "~" else value  # YAML's null, as run_recbole_specgr.py reads it
    if args.config_files:
        args.config_files = [f for item in args.config_files for f in item.replace(",", " ").split()]
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not args.models:
        parser.error("--models: give at least one model name")
    return args, config_dict


def run_comparison(models, dataset, config_file_list=None, config_dict=None, out_prefix=None, split="test",
                   made_by=None):
    """Run each model with the same configuration, write ``<out_prefix>_<Model>.json`` and the table.

    Args:
        models (list[str]): model names.
        dataset (str): dataset name.
        config_file_list (list[str] | None): YAML files, in order.
        config_dict (dict | None): overrides shared by every run.
        out_prefix (str | None): output prefix; default ``results/compare_<dataset>``.
        split (str): split shown in the table.
        made_by (str | None): the command that makes the table, stated under its title.

    Returns:
        (list[dict], list[str]): the results of the models that ran, and the names of those that failed (logged;
        the others still make the table).

    Raises:
        ValueError, KeyError: an unknown model name, a model named twice, a model that is not sequential or a bad
            setting for one of the models, before any model runs.
    """
    from recbole_specgr.config import Config
    from recbole_specgr.quick_start import run_recbole_specgr
    from recbole_specgr.utils import check_sequential_model

    logger = getLogger()
    twice = sorted({model for model in models if models.count(model) > 1})
    if twice:  # the second run's result file and table row would overwrite or repeat the first's
        raise ValueError(f"models: {', '.join(twice)} given twice; expected each model once")
    for model in models:  # every name and setting checked before the first model trains (ValueError, KeyError)
        Config(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=dict(config_dict or {}))
        check_sequential_model(model)
    out_prefix = out_prefix or os.path.join("results", f"compare_{dataset}")
    results, failed = [], []
    for model in models:
        try:
            results.append(
                run_recbole_specgr(
                    model, dataset, config_file_list=config_file_list, config_dict=dict(config_dict or {}),
                    result_json=f"{out_prefix}_{model}.json",
                )
            )
        except (ValueError, KeyError, OSError) as err:  # bad data or settings found while it ran: one line
            logger.error(f"compare: {model} on {dataset} failed: {err.args[0] if isinstance(err, KeyError) else err}")
            failed.append(model)
        except Exception:  # anything else is a bug: its traceback; the other models' rows are kept
            logger.exception(f"compare: {model} on {dataset} failed")
            failed.append(model)
    if results:
        md_path, csv_path = write_table(results, out_prefix, split=split, made_by=made_by, failed=failed)
        logger.info(f"compare: wrote {md_path} and {csv_path}")
    if failed:
        logger.error(f"compare: failed models: {', '.join(failed)}")
    return results, failed


def main(argv=None):
    """Command-line entry point; returns the exit status: 1 when a model failed, 2 (and one ``error:`` line) for a
    bad name, setting or file found before any model ran, as argparse does."""
    from recbole_specgr import config

    args, config_dict = parse_args(argv)
    shown = [arg for arg in (sys.argv[1:] if argv is None else argv) if arg != "--debug"]
    command = shlex.join(["python", "-m", "recbole_specgr.compare", *shown])
    source, config.CONFIG_DICT_SOURCE = config.CONFIG_DICT_SOURCE, "the command line"  # where its settings came from
    try:
        _, failed = run_comparison(args.models, args.dataset, args.config_files, config_dict, args.out, args.split,
                                   made_by=command)
    except (ValueError, KeyError, OSError) as err:
        if args.debug:
            raise
        print(error_line(err), file=sys.stderr)
        return 2
    finally:
        config.CONFIG_DICT_SOURCE = source
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
