"""Run a benchmark *plan*: several models on one dataset and split, each with its own settings, then one
overall / in-sample / unseen table (``recbole_specgr.compare.write_table``).

A plan is a YAML file::

    dataset: ml-1m
    shared: {MAX_ITEM_LIST_LENGTH: 20}        # keys given to every run (same seed and split for all)
    runs:
      - {model: SASRec, config: {epochs: 50}}
      - {model: TIGER, name: TIGER}
      - {model: TIGER, name: TIGER_C, config: {tiger_c_unseen_share: 0.1}}
      - {model: SpecGRAux, config: {specgr_aux_verifier_checkpoint: "{TIGER}", specgr_aux_drafter_checkpoint: "{UniSRec}"}}

``"{NAME}"`` in a value is replaced by the checkpoint of the earlier run called NAME (``name`` defaults to the model;
two runs with one name are refused before anything runs, as they would share one result JSON), so SpecGR_Aux composes
the TIGER and UniSRec trained in the same plan (and SpecGR++ can start from that TIGER). Each run writes
``<out>_<name>.json``; a run whose JSON already exists is not repeated (delete it to rerun), so a long plan can be
resumed; a run killed mid-training continues from the epoch after its last finished one
(``<out>_<name>.progress.pth``, the trainer's ``progress_file``; deleted once the JSON is written). ``--only`` runs a
subset of the names; a run that needs the checkpoint of a run outside ``--only`` with no result yet is skipped, so two
processes with disjoint ``--only`` lists can share the 2-core CPU and either can be rerun later to fill in what it
skipped; ``--only`` with no names trains nothing and only writes the tables again from the JSONs there.

``seeds: [2020, 2021, 2022]`` in the plan runs every model once per seed (``<out>_s<seed>_<name>.json`` and a table
per seed, ``<out>_s<seed>.md``) and writes, per model, the mean ± std over the seeds that have its run as ``<out>.md``
(its ``seeds`` column says how many).

    python benchmarks/run_table.py benchmarks/plans/ml-100k_cpu.yaml --out benchmarks/reports/table_ml-100k_cpu
"""

import argparse
import json
import logging
import os
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from recbole_specgr.compare import write_seed_table, write_table  # noqa: E402
from recbole_specgr.cli import error_message  # noqa: E402
from recbole_specgr.config import Config, check_known_keys  # noqa: E402
from recbole_specgr.quick_start import run_recbole_specgr  # noqa: E402
from recbole_specgr.utils import check_sequential_model  # noqa: E402

logger = logging.getLogger()


def is_reference(value):
    """``"{NAME}"``: the checkpoint of the plan's run NAME."""
    return isinstance(value, str) and value.startswith("{") and value.endswith("}")


def resolve(value, checkpoints):
    """Replace ``"{NAME}"`` by the checkpoint of run NAME."""
    if is_reference(value):
        name = value[1:-1]
        if name not in checkpoints:
            raise ValueError(f"plan: {value} names no earlier run with a checkpoint (have {sorted(checkpoints)})")
        return checkpoints[name]
    return value


def run_names(plan):
    """The plan's run names, in order (``name``, else the model).

    Raises:
        ValueError: two runs share a name (each run's result is ``<out>_<name>.json``).
    """
    names = [run.get("name", run["model"]) for run in plan["runs"]]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ValueError(f"more than one run is named {', '.join(map(repr, twice))} (a run's name defaults to its "
                         f"model; each run writes <out>_<name>.json): give each of them its own `name:`")
    return names


def check_plan(plan, shared):
    """The plan's run names, after checking that every run can start: a known sequential model, known keys (with the
    ``shared`` ones), ``"{NAME}"`` references to earlier runs only (a later or unknown one failed after the runs
    before it had trained), and settings its :class:`~recbole_specgr.config.Config` accepts (a value refused there
    failed that run only after the runs before it had trained).

    Raises:
        ValueError, KeyError: naming the run and what is wrong.
    """
    names = run_names(plan)
    for index, (run, name) in enumerate(zip(plan["runs"], names)):
        check_sequential_model(run["model"])
        check_known_keys({**shared, **(run.get("config") or {})}, f"run {name} of the plan")
        for key, value in (run.get("config") or {}).items():
            if is_reference(value) and value[1:-1] not in names[:index]:
                raise ValueError(f"run {name}: {key}: {value} names no earlier run of the plan (earlier runs: "
                                 f"{names[:index]})")
        settings = {key: value for key, value in {**shared, **(run.get("config") or {})}.items()
                    if not is_reference(value)}  # a reference becomes a checkpoint path once its run has trained
        try:
            Config(model=run["model"], dataset=plan["dataset"], config_dict=settings)
        except (ValueError, KeyError) as err:
            raise ValueError(f"run {name} of the plan: {error_message(err)}") from None
    return names


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("plan", help="plan YAML")
    parser.add_argument("--out", required=True, help="output prefix: <out>.md, <out>.csv, <out>_<name>.json")
    parser.add_argument("--only", nargs="*", default=None, help="run only these names (others are read if present)")
    parser.add_argument("--seeds", nargs="*", type=int, default=None,
                        help="run only these of the plan's seeds (the others' results are still read for the table)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="extra shared keys, e.g. data_path=data/ epochs=5 (YAML values)")
    args = parser.parse_args(argv)

    try:
        plan = yaml.safe_load(Path(args.plan).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        parser.error(f"{args.plan}: expected a readable plan YAML ({error_message(err)})")
    if not isinstance(plan, dict) or not isinstance(plan.get("dataset"), str) or not isinstance(plan.get("runs"), list) \
            or not all(isinstance(run, dict) and "model" in run and isinstance(run.get("config") or {}, dict)
                       for run in plan["runs"]) or not isinstance(plan.get("shared") or {}, dict):
        parser.error(f"{args.plan}: expected a mapping with 'dataset' (str), 'runs' (a list of {{model: …, config: "
                     f"{{…}}}}) and optionally 'shared' (a mapping of settings)")
    shared = dict(plan.get("shared") or {})
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set: expected KEY=VALUE, got {item!r}")
        shared[key] = yaml.safe_load(value)
    try:  # with the --set keys: a misspelt one is named before any run trains
        check_plan(plan, shared)
    except (ValueError, KeyError) as error:
        parser.error(f"{args.plan}: {error_message(error)}")
    # what makes the whole table (runs resume, so --only / --seeds only choose what this call trains)
    made_by = shlex.join(["python", "benchmarks/run_table.py", args.plan, "--out", args.out]
                         + (["--set", *args.set] if args.set else []))
    seeds = plan.get("seeds")
    if seeds is None:
        run_plan(plan, shared, args.out, args.only, made_by)
        print(Path(f"{args.out}.md").read_text())
        return
    if not isinstance(seeds, list) or not seeds or not all(isinstance(seed, int) for seed in seeds):
        parser.error(f"{args.plan}: 'seeds' must be a non-empty list of ints, got {seeds!r}")
    unknown = sorted(set(args.seeds or []) - set(seeds))
    if unknown:
        parser.error(f"--seeds: {unknown} are not among the plan's seeds {seeds}")
    finished = {}
    for seed in seeds:
        only = args.only if args.seeds is None or seed in args.seeds else []  # other seeds: read back only
        results = run_plan(plan, {**shared, "seed": seed}, f"{args.out}_s{seed}", only, made_by)
        if results:
            finished[seed] = results
    if finished:
        write_seed_table(finished, args.out, made_by=made_by)
        print(Path(f"{args.out}.md").read_text())


def run_plan(plan, shared, out, only=None, made_by=None):
    """Run (or read back) every run of the plan with the ``shared`` keys; write ``<out>.md`` / ``.csv`` of those that
    exist. Returns their results, in plan order."""
    names = check_plan(plan, shared)
    checkpoints, results, skipped = {}, [], set()  # skipped: runs outside --only that have no result yet
    for run, name in zip(plan["runs"], names):
        path = f"{out}_{name}.json"
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                result = json.load(f)
        elif only is not None and name not in only:
            skipped.add(name)
            continue
        else:
            waiting = [value[1:-1] for value in (run.get("config") or {}).values() if is_reference(value)
                       and value[1:-1] not in checkpoints and value[1:-1] in skipped]
            if waiting:  # another lane (a different --only) has not written them yet: come back later
                logger.info(f"run_table: {name} skipped, it needs {', '.join(waiting)} first")
                skipped.add(name)
                continue
            config = {key: resolve(value, checkpoints) for key, value in {**shared, **(run.get("config") or {})}.items()}
            progress = config.setdefault("progress_file", f"{out}_{name}.progress.pth")
            result = run_recbole_specgr(run["model"], plan["dataset"], config_dict=config, result_json=path)
            if progress and os.path.exists(progress):
                os.remove(progress)  # the result is written: nothing left to resume
        if result.get("checkpoint"):
            checkpoints[name] = result["checkpoint"]
        results.append({**result, "name": name})  # the table's row label
        logger.info(f"run_table: {name} done ({path})")
    if results:
        write_table(results, out, made_by=made_by)
    return results

if __name__ == "__main__":
    main()
