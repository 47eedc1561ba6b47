"""Issue 13 (2): speculative inference with the verifier's beam search decoded only for the users that still need it
(guided rounds: users still drafting; fill: users still short of K) against the previous behaviour (every user's
beams decoded to the deepest step any user needs), on a trained checkpoint, test split, one thread, alternating the
two within each γ (same process, same batches). Checks that both give identical scores.

    OMP_NUM_THREADS=1 python benchmarks/reports/diagnostics/beams_for_active_users.py saved/SpecGRPP-<seed 2020>.pth
"""
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_gamma_sweep import load_trained  # noqa: E402
from recbole_specgr.model.sequential_recommender.tiger import TIGER  # noqa: E402


def every_user(steps):
    """The beam search as before: ``send`` masks are dropped, so every user is decoded."""
    for step in steps:
        yield step


def main(checkpoint, gammas=(-4.0, -2.0, -8.0), reps=2):
    torch.set_num_threads(1)
    config, trainer, _valid, test_data = load_trained(checkpoint, {"show_progress": False})
    model = trainer.model.eval()
    batches = [trainer.with_exclusions(inter, test_data._dataset) for inter, *_ in test_data]
    n_users = sum(len(b) for b in batches)
    modes = {"every user": lambda *a, **k: every_user(TIGER.beam_search(model, *a, **k)),
             "users that need them": lambda *a, **k: TIGER.beam_search(model, *a, **k)}
    print(f"{n_users} test users, {len(batches)} batches")
    for gamma in gammas:
        model.set_specgr_threshold(gamma)
        best, outputs = {}, {}
        for _ in range(reps):
            for name, search in modes.items():
                model.beam_search = search
                start = time.perf_counter()
                with torch.no_grad():
                    outputs[name] = [model.full_sort_predict(b) for b in batches]
                best[name] = min(best.get(name, float("inf")), time.perf_counter() - start)
        old, new = outputs.values()
        assert all(torch.equal(a, b) for a, b in zip(old, new)), "scores differ"
        stats = model.pop_eval_stats()
        ups = {name: n_users / t for name, t in best.items()}
        print(f"γ = {gamma:g}: every user {ups['every user']:.0f} users/s, users that need them "
              f"{ups['users that need them']:.0f} users/s, ratio {ups['users that need them'] / ups['every user']:.2f}×"
              f" (identical scores; mean rounds {stats.get('mean_rounds', float('nan')):.2f})", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
