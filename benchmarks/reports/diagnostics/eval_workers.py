"""The main job's two evaluation passes on a checkpoint, three ways, alternating, each in a fresh process: one torch
thread (batches one at a time), two threads on each batch (``eval_workers: 1``, torch's intra-op threads), and two
batches at a time on one thread each (``eval_workers`` by default). Per pass: wall time, user + system CPU time, how
many cores were busy on average, minor page faults; and whether the 125 validation rows and the test result equal
the one-thread run's (users/s aside). Session 29 (speed_cpu.md section 18).

    python benchmarks/reports/diagnostics/eval_workers.py saved/SpecGRPP-<date>.pth \\
        > benchmarks/reports/diagnostics/eval_workers.txt
"""
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
WAYS = {"1 thread": (1, None), "2 threads on each batch": (2, 1), "2 workers, 1 thread each": (2, None)}


def child(checkpoint, threads, workers, out):
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_gamma_sweep import main_job_passes

    trainer, passes = main_job_passes(checkpoint, threads)
    if workers is not None:
        trainer.eval_workers = workers
    lines, results = [], {}
    for name, run in passes:
        before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        result = run()
        wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
        cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
        lines.append(f"{name}: {wall:.1f} s, CPU {cpu:.1f} s, cores busy {cpu / wall:.2f}, "
                     f"minor faults {after.ru_minflt - before.ru_minflt:,}")
        results[name] = trainer.threshold_sweep if name.startswith("valid") else result
    Path(out).write_text(json.dumps({"lines": lines, "results": results}, default=str))


def without_speed(value):
    if isinstance(value, dict):
        return {k: without_speed(v) for k, v in value.items() if k != "users_per_s"}
    if isinstance(value, list):
        return [without_speed(v) for v in value]
    return value


def main():
    if sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]), None if sys.argv[4] == "auto" else int(sys.argv[4]), sys.argv[5])
        return
    checkpoint, reference = sys.argv[1], None
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(2):
            ways = list(WAYS.items()) if repeat == 0 else list(reversed(WAYS.items()))
            for way, (threads, workers) in ways:
                out = Path(tmp) / "out.json"
                subprocess.run([sys.executable, __file__, "--child", checkpoint, str(threads),
                                "auto" if workers is None else str(workers), str(out)], check=True,
                               capture_output=True)
                got = json.loads(out.read_text())
                results = without_speed(got["results"])
                if way == "1 thread" and reference is None:
                    reference = results
                print(f"repeat {repeat}, {way}:", flush=True)
                for line in got["lines"]:
                    print("  " + line)
                print(f"  results equal to the first one-thread run's: {results == reference}", flush=True)


if __name__ == "__main__":
    main()
