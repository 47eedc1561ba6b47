"""Dense (torch) vs faiss top-δ drafting time over catalog sizes.

Random unit vectors (D = 128), B = 256 queries, δ = 50. Two cases per size: ``round0`` (only padding excluded) and
guided re-drafting rounds (per-user drafted items; candidates under the beam prefixes, see :func:`make_masks`).
faiss runs on CPU; the dense backend runs on ``--device`` (cpu or cuda). Index build time is reported separately and
not counted. ``recall`` is recall@δ against the exact (dense) top-δ of the same case: the share of the exact top-δ
items an index returns (1 for exact backends); the approximate indexes run once per ``--nprobe`` (IVF) / ``--ef-search``
(HNSW) value over one built index.

Usage::

    python benchmarks/bench_drafting.py --sizes 1000 10000 100000 1000000 --device cuda
"""

import argparse
import copy
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


def time_search(index: DraftIndex, queries: torch.Tensor, delta: int, mask: DraftMask, repeats: int):
    """Median seconds of one drafting call in a fresh session, and the items [B, δ] (cpu) it drafted; a guided round
    (any mask) runs after an untimed round 0 in the same session, as in speculative inference (the dense backend
    reuses its round-0 scores)."""
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
    return statistics.median(times[1:]), items.cpu()


def recall(items: torch.Tensor, exact: torch.Tensor) -> float:
    """Share of the exact top-δ items ``exact`` [B, δ] (0 = none) found in ``items`` [B, δ], over all users."""
    real = exact != 0
    found = (exact.unsqueeze(2) == items.unsqueeze(1)).any(2) & real
    return float(found.sum()) / max(1, int(real.sum()))


def build_indexes(vectors: torch.Tensor, kinds, nprobes, ef_searches) -> dict:
    """name -> (faiss DraftIndex, build seconds); one build per kind, copied per nprobe / efSearch value."""
    indexes = {}
    for kind in kinds:
        start = time.perf_counter()
        index = DraftIndex(vectors, "faiss", faiss_index=kind)
        build_s = time.perf_counter() - start
        if kind == "flat":
            indexes["faiss-flat"] = (index, build_s)
        for value in {"ivf": nprobes, "hnsw": ef_searches}.get(kind, []):
            variant = copy.copy(index)  # shares the faiss index, search parameter of its own
            setattr(variant, "nprobe" if kind == "ivf" else "ef_search", value)
            indexes[f"faiss-{kind}/{value}"] = (variant, build_s)
    return indexes


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000, 1000000])
    parser.add_argument("--device", default="cpu", help="device of the dense backend (cpu / cuda)")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--delta", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--indexes", nargs="+", default=["flat", "hnsw", "ivf"], help="faiss index kinds")
    parser.add_argument("--nprobe", type=int, nargs="+", default=[16], help="IVF lists visited (DraftIndex default 16)")
    parser.add_argument("--ef-search", type=int, nargs="+", default=[128],
                        help="HNSW search depth (DraftIndex default 128; raised to the fetch size when smaller)")
    parser.add_argument("--min-recall", type=float, default=0.95, help="recall bar of the second winner column")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    device = torch.device(args.device)
    logger.info(f"B={args.batch} D={args.dim} δ={args.delta} dense on {device}, faiss on cpu "
                f"(torch threads {torch.get_num_threads()})")
    logger.info(f"{'n':>9} {'case':>12} {'backend':>16} {'build_s':>8} {'search_ms':>10} {'recall':>6}")
    winners = []
    for n in args.sizes:
        g = torch.Generator().manual_seed(n)
        vectors = torch.nn.functional.normalize(torch.randn(n, args.dim, generator=g), dim=1)
        queries = torch.nn.functional.normalize(torch.randn(args.batch, args.dim, generator=g), dim=1)
        indexes = {"dense": (DraftIndex(vectors.to(device), "dense"), 0.0)}
        indexes.update(build_indexes(vectors, args.indexes, args.nprobe, args.ef_search))
        masks = {"cpu": make_masks(args.batch, n, args.delta, "cpu")}
        masks["dev"] = make_masks(args.batch, n, args.delta, device)
        for case in masks["cpu"]:
            results, exact = {}, None  # name -> (seconds, recall); exact: dense's items (first)
            for name, (index, build_s) in indexes.items():
                on_dev = name == "dense"
                q = queries.to(device) if on_dev else queries
                mask = masks["dev" if on_dev else "cpu"][case]
                seconds, items = time_search(index, q, args.delta, mask, args.repeats)
                exact = items if on_dev else exact
                results[name] = (seconds, recall(items, exact))
                logger.info(f"{n:>9} {case:>12} {name:>16} {build_s:>8.2f} {1000 * seconds:>10.2f} "
                            f"{results[name][1]:>6.3f}")
            best = min(results, key=lambda name: results[name][0])
            good = min((name for name in results if results[name][1] >= args.min_recall),
                       key=lambda name: results[name][0])  # dense (recall 1) always qualifies
            winners.append((n, case, results["dense"][0], [(best, *results[best]), (good, *results[good])]))
        del indexes, masks
    logger.info(f"fastest per size and case (search only; speed-up over dense, recall@δ), then fastest with recall "
                f">= {args.min_recall}:")
    for n, case, dense_s, picks in winners:
        cols = [f"{name:>16} {1000 * seconds:8.2f} ms {dense_s / seconds:5.1f}x r={rec:.3f}"
                for name, seconds, rec in picks]
        logger.info(f"  n={n:>9} {case:>12}: {cols[0]} | {cols[1]}")


if __name__ == "__main__":
    main()
