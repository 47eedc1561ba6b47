"""The main job's evaluation (the γ-grid validation pass and the test pass) under two versions of this package, on one
checkpoint, side by side (issue 13: "evaluation time at least halved against today's code").

A git revision of the package (``--baseline``, by default ``f006ba1``: the code issue 13 was filed against) is
exported with ``git archive`` to a temporary folder; each pass then runs in a fresh child process whose
``recbole_specgr`` is imported from that folder or from this checkout (``PYTHONPATH``), alternating which goes first,
``--threads`` torch threads each (default one; the main job uses every core: ``--threads 2`` on this machine). A
child loads the checkpoint, runs ``trainer.tune_threshold(valid)`` (every γ of the checkpoint's
``specgr_threshold_grid`` in one pass, what each stage-2 validation and the final γ choice of the main job do) and ``trainer.evaluate(test)`` at the chosen γ, and reports wall time and minor page faults of each
(``getrusage``) plus the chosen γ and test R@50 (the same model and definition of Eq. 2: the same γ; the test
R@50 agreed until session 18, whose beam exclusion and session 19's history exclusion changed the evaluation on
purpose). A version whose quick start sets ``keep_freed_memory`` (session 16 on) has its child set it too,
as its main job would.

    python run_recbole_specgr.py --model=SpecGRPP --dataset=ml-100k          # leaves saved/SpecGRPP-*.pth
    python benchmarks/bench_eval_versions.py --checkpoint saved/SpecGRPP-<date>.pth --repeats 2 \\
        --out benchmarks/reports/main_job_eval_versions_cpu
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARK = "[bench_eval_versions] "
ISSUE_13_CODE = "f006ba1"  # the code issue 13 was filed against


def child(checkpoint_path: str, threads: int) -> dict:
    """One evaluation in this process with whichever ``recbole_specgr`` ``PYTHONPATH`` gives (only APIs both versions
    have). Not ``bench_gamma_sweep.load_trained``: importing that script puts this checkout first on ``sys.path``, and
    the baseline child would then run today's package."""
    import torch

    torch.set_num_threads(threads)
    import recbole_specgr
    from recbole_specgr import compat  # noqa: F401  (must precede recbole imports)
    from recbole.data import data_preparation
    from recbole.utils import init_logger, init_seed
    from recbole_specgr.compat import load_checkpoint
    from recbole_specgr.config import config_from_saved
    from recbole_specgr.utils import create_dataset, get_model, get_trainer

    checkpoint = load_checkpoint(checkpoint_path, map_location="cpu")
    config = config_from_saved(checkpoint["config"], show_progress=False)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    kept = False  # what the version's own quick start does before it evaluates (versions before session 16 have no
    # such step; an editable install's finder would hand the baseline this checkout's module, so only a file of the
    # imported package counts)
    if (Path(recbole_specgr.__file__).parent / "allocator.py").is_file() and config["keep_freed_memory"]:
        from recbole_specgr.allocator import keep_freed_memory

        kept = keep_freed_memory()
    dataset = create_dataset(config)
    _, valid_data, test_data = data_preparation(config, dataset)
    model = get_model(config["model"])(config, valid_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    trainer.load_model(checkpoint_path)

    def measured(call):
        faults, start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
        out = call()
        return out, time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults

    _, valid_s, valid_faults = measured(lambda: trainer.tune_threshold(valid_data))
    test, test_s, test_faults = measured(lambda: trainer.evaluate(test_data, load_best_model=False))
    k = max(config["topk"])
    return {"package": str(Path(recbole_specgr.__file__).resolve().parent), "grid": config["specgr_threshold_grid"],
            "gamma": trainer.model.specgr_threshold, "valid_s": valid_s, "valid_minflt": valid_faults,
            "test_s": test_s, "test_minflt": test_faults, "test_recall": test[f"recall@{k}"], "k": k,
            "keep_freed_memory": kept}


def run_child(code_root: Path, checkpoint: str, threads: int) -> dict:
    """:func:`child` in a fresh process importing the package from ``code_root``; its result line, parsed."""
    env = dict(os.environ, PYTHONPATH=str(code_root), OMP_NUM_THREADS=str(threads))
    proc = subprocess.run([sys.executable, __file__, "--child", "--checkpoint", checkpoint, "--threads", str(threads)],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARK)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"evaluation with the package from {code_root} failed (exit {proc.returncode}):\n"
                           + proc.stderr[-3000:])
    result = json.loads(lines[-1][len(MARK):])
    if Path(result["package"]) != (code_root / "recbole_specgr").resolve():
        raise RuntimeError(f"expected recbole_specgr from {code_root}, the child imported {result['package']}")
    return result


def export_revision(revision: str, into: Path) -> Path:
    """The package's files at git ``revision``, extracted under ``into``."""
    archive = subprocess.run(["git", "archive", revision], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def report(rows, baseline: str, head: str, command: str, threads: int = 1) -> str:
    """Markdown: each pass of each version, then the best of each version and the ratios."""
    named = " (issue 13's code)" if baseline == ISSUE_13_CODE else ""
    lines = [f"# Main-job evaluation: `{baseline}`{named} vs `{head}`", "", "```bash", command, "```", "",
             f"torch threads per process: {threads} (each version as its main job uses them: from session 29 on, "
             "evaluation batches run `eval_workers` at a time, by default one per thread)", "",
             "| repeat | code | valid γ-grid pass (s) | test pass (s) | minor faults valid / test | γ chosen | "
             "test R@K |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        code = row["code"] + (" (freed memory kept)" if row.get("keep_freed_memory") else "")
        lines.append(f"| {row['repeat']} | {code} | {row['valid_s']:.1f} | {row['test_s']:.1f} | "
                     f"{row['valid_minflt']:,} / {row['test_minflt']:,} | {row['gamma']:g} | "
                     f"{row['test_recall']:.4f} |")
    best = {code: min((r for r in rows if r["code"] == code), key=lambda r: r["valid_s"] + r["test_s"])
            for code in (baseline, head)}
    old, new = best[baseline], best[head]
    lines += ["", f"Best of each (valid + test): {baseline} {old['valid_s'] + old['test_s']:.1f} s, "
              f"{head} {new['valid_s'] + new['test_s']:.1f} s — ratio "
              f"**{(old['valid_s'] + old['test_s']) / (new['valid_s'] + new['test_s']):.2f}×** "
              f"(valid pass {old['valid_s'] / new['valid_s']:.2f}×, test pass {old['test_s'] / new['test_s']:.2f}×); "
              f"minor page faults {old['valid_minflt'] + old['test_minflt']:,} → "
              f"{new['valid_minflt'] + new['test_minflt']:,}."]
    total = {code: sorted(r["valid_s"] + r["test_s"] for r in rows if r["code"] == code) for code in (baseline, head)}
    median = {code: statistics.median(times) for code, times in total.items()}
    pairs = [sum(r["valid_s"] + r["test_s"] for r in rows if r["repeat"] == repeat and r["code"] == baseline)
             / sum(r["valid_s"] + r["test_s"] for r in rows if r["repeat"] == repeat and r["code"] == head)
             for repeat in sorted({r["repeat"] for r in rows})]
    lines += ["", f"Median of each: {baseline} {median[baseline]:.1f} s, {head} {median[head]:.1f} s — ratio "
              f"**{median[baseline] / median[head]:.2f}×**; per repeat (the two back to back): "
              + ", ".join(f"{ratio:.2f}×" for ratio in pairs) + "."]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--baseline", default=ISSUE_13_CODE, help="git revision to compare with")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="write <out>.md and <out>.json")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(MARK + json.dumps(child(args.checkpoint, args.threads)), flush=True)
        return
    if args.repeats < 1:
        sys.exit(f"--repeats: expected an int >= 1, got {args.repeats}")
    if not Path(args.checkpoint).is_file():
        sys.exit(f"--checkpoint: no such file {args.checkpoint}")
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.strip()
    changed = subprocess.run(["git", "status", "--porcelain", "--", "recbole_specgr"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.strip()
    if changed:  # this checkout's package runs as it is (new files included): name it apart from its last commit
        head += "+uncommitted"
    baseline_commit = subprocess.run(["git", "rev-parse", "--short", args.baseline + "^{commit}"], cwd=ROOT,
                                     capture_output=True, text=True).stdout.strip()
    if not baseline_commit:
        sys.exit(f"--baseline: {args.baseline} is not a git revision of this repository")
    if baseline_commit == head:
        sys.exit(f"--baseline: {args.baseline} is this checkout's own code; nothing to compare")
    rows = []
    with tempfile.TemporaryDirectory(prefix="specgr-baseline-") as tmp:
        roots = {args.baseline: export_revision(args.baseline, Path(tmp)), head: ROOT}
        for repeat in range(args.repeats):
            order = [args.baseline, head] if repeat % 2 == 0 else [head, args.baseline]
            for code in order:
                row = dict(run_child(roots[code], args.checkpoint, args.threads), repeat=repeat, code=code)
                print(json.dumps(row), flush=True)
                rows.append(row)
    command = "python " + " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:])
    text = report(rows, args.baseline, head, command, args.threads)
    print(text)
    if args.out:
        from recbole_specgr.atomic import atomic_write

        with atomic_write(args.out + ".md", "w") as f:
            f.write(text)
        with atomic_write(args.out + ".json", "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
