"""Dense (torch) vs faiss top-δ drafting time over catalog sizes.

Random unit vectors (D = 128), B = 256 queries, δ = 50. Two cases per size: ``round0`` (only padding excluded) and
guided re-drafting rounds (per-user drafted items; candidates under the beam prefixes, see :func:`make_masks`).
faiss runs on CPU; the dense backend runs on ``--device`` (cpu or cuda). Index build time is reported separately and
not counted.

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
    """round0: no per-user mask. Guided re-drafting (δ drafted items per user, candidates = the items under the
    user's beam prefixes, random prefix ids over 256 · 256 two-digit prefixes): ``redraft`` with a quarter of the
    first-digit prefixes (≈ B_1 of β = 64 beams over C = 256 codes), ``redraft-deep`` with 64 two-digit prefixes
    (≈ B_2), and ``redraft-mask``: redraft's restriction as a whole-catalog ``[B, n]`` mask (what every guided round
    cost before candidates)."""
    g = torch.Generator().manual_seed(seed)
    drafted = torch.zeros(n_users, n_items, dtype=torch.bool)
    drafted.scatter_(1, torch.randint(1, n_items, (n_users, delta), generator=g), True)
    prefix = torch.randint(0, 256 * 256, (n_items,), generator=g)
    prefix[0] = -1

    def under(picked):  # [B, P] bool over prefix ids -> candidates [B, M] (0 = padding), the allowed mask
        allowed = picked[:, prefix.clamp(min=0)] & (prefix >= 0)
        width = int(allowed.sum(1).max())
        cands = torch.zeros(n_users, width, dtype=torch.long)
        for b in range(n_users):
            ids = torch.nonzero(allowed[b]).squeeze(1)
            cands[b, width - ids.numel():] = ids  # ascending, padding 0 first (as PrefixIndex.items_under)
        return cands, allowed

    first = torch.rand(n_users, 256, generator=g) < 0.25  # first digit = prefix // 256
    cands, allowed = under(first.repeat_interleave(256, dim=1))
    picked = torch.zeros(n_users, 256 * 256, dtype=torch.bool)
    picked.scatter_(1, torch.randint(0, 256 * 256, (n_users, 64), generator=g), True)
    deep_cands, _ = under(picked)
    to = lambda t: t.to(device)  # noqa: E731
    return {"round0": DraftMask(),
            "redraft": DraftMask(drafted=to(drafted), candidates=to(cands)),
            "redraft-deep": DraftMask(drafted=to(drafted), candidates=to(deep_cands)),
            "redraft-mask": DraftMask(allowed=to(allowed), drafted=to(drafted))}


def time_search(index: DraftIndex, queries: torch.Tensor, delta: int, mask: DraftMask, repeats: int) -> float:
    """Median seconds of one drafting call in a fresh session; a guided round (any mask) runs after an untimed
    round 0 in the same session, as in speculative inference (the dense backend reuses its round-0 scores)."""
    cuda = queries.is_cuda
    times = []
    for _ in range(repeats + 1):  # first call is a warm-up
        session = index.session(queries)
        if any(part is not None for part in mask):
            session.topk(delta)
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        items, _ = session.topk(delta, mask)
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
    logger.info(f"{'n':>9} {'case':>12} {'backend':>12} {'build_s':>8} {'search_ms':>10}")
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
        for case in masks["cpu"]:
            results = {}
            for name, (index, build_s) in indexes.items():
                on_dev = name == "dense"
                q = queries.to(device) if on_dev else queries
                mask = masks["dev" if on_dev else "cpu"][case]
                results[name] = time_search(index, q, args.delta, mask, args.repeats)
                logger.info(f"{n:>9} {case:>12} {name:>12} {build_s:>8.2f} {1000 * results[name]:>10.2f}")
            best = min(results, key=results.get)
            winners.append((n, case, best, results[best], results["dense"]))
        del indexes, masks
    logger.info("fastest per size and case (search only):")
    for n, case, best, best_s, dense_s in winners:
        logger.info(f"  n={n:>9} {case:>12}: {best:>12} {1000 * best_s:8.2f} ms (dense {1000 * dense_s:.2f} ms, "
                    f"{dense_s / best_s:.1f}x)")


if __name__ == "__main__":
    main()
