"""Dense (torch) vs faiss top-δ drafting time over catalog sizes.

Random unit vectors (D = 128), B = 256 queries, δ = 50. Two cases per size: ``round0`` (only padding excluded) and
``redraft`` (a guided re-drafting round: per-user drafted items and beam-prefix table). faiss runs on CPU; the dense
backend runs on ``--device`` (cpu or cuda). Index build time is reported separately and not counted.

Usage::

    python benchmarks/bench_drafting.py --sizes 1000 10000 100000 1000000 --device cuda
"""

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from recbole_specgr.inference.drafting import DraftIndex, DraftMask  # noqa: E402

logger = logging.getLogger()


def make_masks(n_users: int, n_items: int, delta: int, device, seed: int = 0) -> dict:
    """round0: no per-user mask; redraft: δ drafted items per user and a 1-in-4 beam-prefix table over 256 ids."""
    g = torch.Generator().manual_seed(seed)
    drafted = torch.zeros(n_users, n_items, dtype=torch.bool)
    drafted.scatter_(1, torch.randint(1, n_items, (n_users, delta), generator=g), True)
    item_prefix = torch.randint(0, 256, (n_items,), generator=g)
    table = torch.rand(n_users, 256, generator=g) < 0.25
    redraft = DraftMask(drafted=drafted.to(device), item_prefix=item_prefix.to(device), prefix_table=table.to(device))
    return {"round0": DraftMask(), "redraft": redraft}


def time_search(index: DraftIndex, queries: torch.Tensor, delta: int, mask: DraftMask, repeats: int) -> float:
    """Median seconds of one fresh drafting call (a new session each time: nothing cached between repeats)."""
    cuda = queries.is_cuda
    times = []
    for _ in range(repeats + 1):  # first call is a warm-up
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        items, _ = index.search(queries, delta, mask)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000, 1000000])
    parser.add_argument("--device", default="cpu", help="device of the dense backend (cpu / cuda)")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--delta", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--indexes", nargs="+", default=["flat", "hnsw", "ivf"], help="faiss index kinds")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    device = torch.device(args.device)
    logger.info(f"B={args.batch} D={args.dim} δ={args.delta} dense on {device}, faiss on cpu "
                f"(torch threads {torch.get_num_threads()})")
    logger.info(f"{'n':>9} {'case':>8} {'backend':>12} {'build_s':>8} {'search_ms':>10}")
    winners = []
    for n in args.sizes:
        g = torch.Generator().manual_seed(n)
        vectors = torch.nn.functional.normalize(torch.randn(n, args.dim, generator=g), dim=1)
        queries = torch.nn.functional.normalize(torch.randn(args.batch, args.dim, generator=g), dim=1)
        indexes = {"dense": (DraftIndex(vectors.to(device), "dense"), 0.0)}
        for kind in args.indexes:
            start = time.perf_counter()
            indexes[f"faiss-{kind}"] = (DraftIndex(vectors, "faiss", faiss_index=kind), time.perf_counter() - start)
        masks = {"cpu": make_masks(args.batch, n, args.delta, "cpu")}
        masks["dev"] = make_masks(args.batch, n, args.delta, device)
        for case in ("round0", "redraft"):
            results = {}
            for name, (index, build_s) in indexes.items():
                on_dev = name == "dense"
                q = queries.to(device) if on_dev else queries
                mask = masks["dev" if on_dev else "cpu"][case]
                results[name] = time_search(index, q, args.delta, mask, args.repeats)
                logger.info(f"{n:>9} {case:>8} {name:>12} {build_s:>8.2f} {1000 * results[name]:>10.2f}")
            best = min(results, key=results.get)
            winners.append((n, case, best, results[best], results["dense"]))
        del indexes, masks
    logger.info("fastest per size and case (search only):")
    for n, case, best, best_s, dense_s in winners:
        logger.info(f"  n={n:>9} {case:>8}: {best:>12} {1000 * best_s:8.2f} ms (dense {1000 * dense_s:.2f} ms, "
                    f"{dense_s / best_s:.1f}x)")


if __name__ == "__main__":
    main()
