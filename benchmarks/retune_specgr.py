"""Choose a trained SpecGR model's inference setting (γ, γ_u, α, v_u, β, η) again on validation, then test once, without
retraining: the weights stay those the run selected. Reads a result JSON of ``run_table.py`` (its checkpoint must be on
this machine) and writes the same record with ``valid``, ``test``, the chosen setting and ``threshold_sweep``
replaced, plus ``retuned`` (the source JSON and the overrides). Its ``checkpoint`` is a copy of the source's with the
new setting written in (``<checkpoint>-retuned-<out name>.pth``): the source checkpoint keeps the setting of the
source JSON, so each JSON names the file that recommends as it reports.

Used when the inference grid grows after the (hours-long) training runs, e.g. the joint ranking (α > 0):

    OMP_NUM_THREADS=1 python benchmarks/retune_specgr.py \\
        benchmarks/reports/table_ml-100k_cpu_s2020_SpecGRPP_paper.json \\
        --config '{"specgr_draft_weight_grid": [0, 1, 2, 3], "specgr_unseen_score_grid": [-2.0, -1.75, -1.5]}' \\
        --out benchmarks/reports/table_ml-100k_cpu_s2020_SpecGRPP.json
"""

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_gamma_sweep import load_trained  # noqa: E402
from recbole_specgr.cli import error_message  # noqa: E402
from recbole_specgr.evaluation import nest_result  # noqa: E402
from recbole_specgr.quick_start import write_json_atomic  # noqa: E402
from recbole_specgr.trainer.threshold_tuning import setting_keys  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="a run_table result JSON of a SpecGR model (SpecGRPP / SpecGRAux)")
    parser.add_argument("--config", default="{}", help="JSON dict of config overrides (the inference grids)")
    parser.add_argument("--out", required=True, help="the result JSON to write")
    args = parser.parse_args(argv)
    try:
        with open(args.source, encoding="utf-8") as f:
            source = json.load(f)
    except (OSError, ValueError) as err:  # json.JSONDecodeError is a ValueError
        parser.error(f"{args.source}: expected a run_table result JSON ({err})")
    try:
        overrides = json.loads(args.config)
    except json.JSONDecodeError as err:
        parser.error(f"--config: expected a JSON object, got {args.config!r} ({err})")
    if not isinstance(overrides, dict):
        parser.error(f"--config: expected a JSON object, got {args.config!r}")
    if not isinstance(source, dict) or not source.get("checkpoint") or not Path(source["checkpoint"]).is_file():
        checkpoint = source.get("checkpoint") if isinstance(source, dict) else None
        parser.error(f"{args.source}: its checkpoint {checkpoint!r} is not on this machine")

    try:  # the overrides are checked as any config is: a bad grid is one line, before anything is written
        config, trainer, valid_data, test_data = load_trained(source["checkpoint"], {"show_progress": False,
                                                                                     **overrides})
    except (ValueError, KeyError) as err:
        parser.error(error_message(err))
    if not hasattr(trainer, "tune_threshold") or trainer.threshold_grid is None:
        parser.error(f"{args.source}: {config['model']} has no inference grid to choose from "
                     "(give specgr_*_grid keys in --config)")
    start = time.perf_counter()
    valid = trainer.tune_threshold(valid_data)
    test = trainer.evaluate(test_data, load_best_model=False)
    model = trainer.model
    checkpoint = Path(source["checkpoint"])
    retuned_checkpoint = str(checkpoint.with_name(f"{checkpoint.stem}-retuned-{Path(args.out).stem}.pth"))
    trainer.saved_model_file = str(checkpoint)  # the weights evaluated above, from the source JSON's file
    trainer.save_chosen_setting(retuned_checkpoint)
    if not Path(retuned_checkpoint).is_file():
        parser.error(f"{retuned_checkpoint}: not written (no setting was chosen)")
    result = dict(source)
    result.update({
        "checkpoint": retuned_checkpoint,
        "config": {**source.get("config", {}), **overrides, **setting_keys(model.specgr_setting)},
        "valid": nest_result(valid),
        "test": nest_result(test),
        "eval_time_s": round(time.perf_counter() - start, 3),
        **setting_keys(model.specgr_setting),
        "threshold_sweep": trainer.threshold_sweep,
        "retuned": {"source": args.source, "config": overrides},
    })
    write_json_atomic(args.out, result)
    at_k = f"{trainer.metrics[0]}@{max(config['topk'])}"  # recall at the largest cut-off the run computed, if it did
    print(f"{args.out}: {model.specgr_setting} test {at_k} {test[at_k]:.4f} "
          f"in-sample {test[f'in_sample/{at_k}']:.4f} unseen {test[f'unseen/{at_k}']:.4f}")


if __name__ == "__main__":
    main()
