"""Check issue 10's quality targets on the result JSONs of a benchmark plan (``run_table.py``) and write them, each
met or missed by how much, with the learning-curve evidence of convergence, to ``<out>_targets.md``.

    python benchmarks/check_targets.py --out benchmarks/reports/table_ml-100k_cpu --seeds 2020 2021 2022
    python benchmarks/check_targets.py --out benchmarks/reports/table_ml-1m_cpu --seeds 2020 --tiger TIGER TIGER_20

Targets (test split; means over the seeds given, or the single run without ``--seeds``):

1. SpecGR++ overall R@50 and overall NDCG@10 above every baseline's;
2. SpecGR++ unseen R@50 >= UniSRec's (every UniSRec row of the plan), shown next to the TextSim floor's;
3. TIGER in-sample R@50 next to SASRec's (the paper's premise), with both learning curves' convergence; ``--tiger``
   names the TIGER rows to compare (e.g. a longer-trained ``TIGER_20`` next to the plan's ``TIGER``).
"""

import argparse
import glob
import json
import re
import shlex
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from recbole_specgr.atomic import atomic_write  # noqa: E402
from recbole_specgr.compare import made_by_lines  # noqa: E402

CANDIDATE = "SpecGRPP"
PER_SEED = re.compile(r"s\d+_")  # the start of a per-seed run file's name under the plain prefix


def is_ours(name):
    """The package's SpecGR models (SpecGRPP, SpecGRAux and their variants, e.g. ``SpecGRPP_paper``); every other
    row is a baseline."""
    return name.startswith("SpecGR")


def model_of(name, results):
    """The model a row ran (its JSON's ``model``; the row name where a result does not say)."""
    return results[0].get("model", name)


def load_runs(out, seeds):
    """``{name: [result per seed that has it]}`` for every run JSON under the prefix (names from the file names);
    without ``seeds``, the per-seed files (``<out>_s<seed>_<name>.json``) are left out."""
    prefixes = [f"{out}_s{seed}_" for seed in seeds] if seeds else [f"{out}_"]
    runs = {}
    for prefix in prefixes:
        for path in sorted(glob.glob(prefix + "*.json")):
            name = path[len(prefix):-len(".json")]
            if not seeds and PER_SEED.match(name):  # <out>_s<seed>_<run>.json seen from the plain prefix
                continue
            runs.setdefault(name, []).append(json.loads(Path(path).read_text()))
    return runs


def mean_std(results, subset, metric):
    values = [r["test"][subset][metric] for r in results]
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def fmt(ms, n=None):
    return f"{ms[0]:.4f} ± {ms[1]:.4f}" + ("" if n is None else f" ({n} seed{'s' if n != 1 else ''})")


def convergence(result):
    """One line on a run's learning curve: validations, the best one, and why training ended (per stage for
    SpecGR++: its stages are validated by different metrics)."""
    curve = result.get("learning_curve") or []
    stages = [c.get("stage") for c in curve if c.get("stage")]
    if stages:
        parts = []
        start = [c for c in curve if c.get("stage") == "init_checkpoint" and "valid_speculative_score" in c]
        if start:  # a run that started from trained weights (init_checkpoint): where its curve begins
            parts.append(f"init_checkpoint: speculative valid {start[0].get('valid_speculative_metric', '')} "
                         f"{start[0]['valid_speculative_score']:.4f}")
        for stage in [s for s in dict.fromkeys(stages) if s != "init_checkpoint"]:
            part = {**result, "learning_curve": [{k: v for k, v in c.items() if k != "stage"} for c in curve
                                                 if c.get("stage") == stage]}
            if stage == "finetune":
                part["config"] = {"epochs": (result.get("config") or {}).get("specgrpp_finetune_epochs")}
                part["learning_curve"] = [{**c, "epoch": i} for i, c in enumerate(part["learning_curve"])]
            parts.append(f"{stage}: {convergence(part)}")
        return "; ".join(parts)
    validated = [c for c in curve if "valid_score" in c]
    if not validated:
        return "no validation recorded"
    best = max(validated, key=lambda c: c["valid_score"])
    last = curve[-1]
    max_epochs = (result.get("config") or {}).get("epochs")
    ended = "early stopping" if max_epochs and last["epoch"] + 1 < int(max_epochs) else f"the last of {max_epochs} epochs"
    scores = ", ".join(f"{c['valid_score']:.4f}" for c in validated)
    change = (f"; last validation {validated[-1]['valid_score'] - validated[-2]['valid_score']:+.4f} over the one "
              f"before" if len(validated) > 1 else "")
    return (f"valid {validated[0].get('valid_metric', '')} by epoch: {scores}; best at epoch {best['epoch']} of "
            f"{last['epoch'] + 1} trained (ended by {ended}){change}")


def check(runs, candidate=CANDIDATE, tigers=("TIGER",)):
    """Target lines for the SpecGR++ row ``candidate`` (a run name) against every baseline row; the in-sample
    premise for each TIGER row named in ``tigers``."""
    lines = []
    if candidate not in runs:
        return [f"- {candidate} has no complete result yet: no target can be checked."]
    cand = runs[candidate]
    baselines = [name for name in runs if not is_ours(name)]
    for subset, metric, label in (("overall", "recall@50", "overall R@50"), ("overall", "ndcg@10", "overall NDCG@10")):
        ours = mean_std(cand, subset, metric)
        best_name = max(baselines, key=lambda n: mean_std(runs[n], subset, metric)[0])
        best = mean_std(runs[best_name], subset, metric)
        gap = ours[0] - best[0]
        verdict = "**met**" if gap > 0 else "**missed**"
        lines.append(f"- {label}: {candidate} {fmt(ours, len(cand))} vs the best baseline {best_name} "
                     f"{fmt(best, len(runs[best_name]))} — {verdict} "
                     f"({gap:+.4f})")
    ours = mean_std(cand, "unseen", "recall@50")
    # every UniSRec row (e.g. a longer-trained one beside the plan's) is a target; TextSim rows are the floor
    for model in ("UniSRec", "TextSim"):
        for name in (n for n in baselines if model_of(n, runs[n]) == model):
            other = mean_std(runs[name], "unseen", "recall@50")
            verdict = ("**met**" if ours[0] >= other[0] else "**missed**") if model == "UniSRec" \
                else "(floor, for reference)"
            lines.append(f"- unseen R@50: {candidate} {fmt(ours, len(cand))} vs {name} {fmt(other, len(runs[name]))} — "
                         f"{verdict} ({ours[0] - other[0]:+.4f})")
    for name in (t for t in tigers if t in runs and "SASRec" in runs):
        tiger, sasrec = mean_std(runs[name], "in_sample", "recall@50"), mean_std(runs["SASRec"], "in_sample", "recall@50")
        lines.append(f"- in-sample R@50: {name} {fmt(tiger, len(runs[name]))} vs SASRec "
                     f"{fmt(sasrec, len(runs['SASRec']))} ({tiger[0] - sasrec[0]:+.4f})")
    lines.append("")
    lines.append("Convergence (first seed's learning curve):")
    for name in (*tigers, "SASRec", candidate, "UniSRec"):
        if name in runs:
            lines.append(f"- {name}: {convergence(runs[name][0])}")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="the plan's output prefix (run_table.py --out)")
    parser.add_argument("--seeds", nargs="*", type=int, default=None)
    parser.add_argument("--candidates", nargs="*", default=[CANDIDATE],
                        help="the SpecGR++ rows to check, each against every baseline (default: SpecGRPP)")
    parser.add_argument("--tiger", nargs="+", default=None,
                        help="the TIGER rows whose in-sample R@50 is compared with SASRec's, each of which must have "
                             "a result (default: TIGER, where it has one)")
    args = parser.parse_args(argv)
    runs = load_runs(args.out, args.seeds)
    missing = [name for name in args.tiger or () if name not in runs]
    if missing:
        parser.error(f"--tiger: no result JSON under {args.out}_ for {', '.join(missing)} "
                     f"(runs with results: {', '.join(sorted(runs)) or 'none'})")
    args.tiger = args.tiger or ["TIGER"]
    seeds = f"seeds {', '.join(map(str, args.seeds))}" if args.seeds else "one run"
    command = shlex.join(["python", "benchmarks/check_targets.py", *(argv if argv is not None else sys.argv[1:])])
    text = "\n".join([f"# Targets of issue 10 — test split, {seeds}", "", *made_by_lines(command),
                      "Runs with results (seeds): " + ", ".join(f"{name} ({len(results)})" for name, results
                                                               in sorted(runs.items()))]
                     + [line for name in args.candidates for line in ["", f"## {name}", "", *check(runs, name, args.tiger)]]) + "\n"
    with atomic_write(f"{args.out}_targets.md", "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
