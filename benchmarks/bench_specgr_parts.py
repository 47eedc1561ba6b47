"""Where SpecGR++'s inference time goes, part by part, on a trained checkpoint: the encoder, the drafter's query, one
drafting top-δ, one verification of δ drafts (Eq. 2) and one full constrained beam search of width β, each timed
alone over the same test batches, as users/s (higher = cheaper). One draft-verify round costs encoder + query +
drafting + verification; the beam search is what SpecGR is compared with.

    python benchmarks/bench_specgr_parts.py --checkpoint saved/SpecGRPP-<date>.pth --threads 1 \\
        --out benchmarks/reports/specgr_parts_ml-100k_cpu
"""

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_gamma_sweep import load_trained  # noqa: E402
from recbole_specgr.atomic import atomic_write  # noqa: E402
from recbole_specgr.inference.drafting import DraftMask  # noqa: E402

PARTS = ("encoder", "drafter query", "drafting top-δ", "verification of δ drafts", "beam search (β, all l digits)")


@torch.no_grad()
def time_parts(model, batches, draft_size, beams, repeats):
    """Seconds per part summed over ``batches``, best of ``repeats`` passes."""
    recommender = model.speculative_recommender()
    verifier, _, seen = model.speculative_parts()
    best = {}
    for _ in range(repeats):
        seconds = dict.fromkeys(PARTS, 0.0)
        for item_seq, item_seq_len in batches:
            start = time.perf_counter()
            enc = verifier.encode(item_seq, item_seq_len)
            seconds["encoder"] += time.perf_counter() - start
            start = time.perf_counter()
            queries = recommender.draft_queries(item_seq, item_seq_len, enc)
            seconds["drafter query"] += time.perf_counter() - start
            start = time.perf_counter()
            drafted = torch.zeros(item_seq.size(0), recommender.n_items, dtype=torch.bool)
            items, _ = recommender.draft_index.session(queries).topk(draft_size, DraftMask(None, drafted))
            seconds["drafting top-δ"] += time.perf_counter() - start
            start = time.perf_counter()
            recommender._verify(enc, items, seen)
            seconds["verification of δ drafts"] += time.perf_counter() - start
            start = time.perf_counter()
            for _step in verifier.beam_search(enc, beams):
                pass
            seconds["beam search (β, all l digits)"] += time.perf_counter() - start
        best = {k: min(v, best.get(k, float("inf"))) for k, v in seconds.items()}
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--n_batches", type=int, default=12, help="test batches timed (eval_batch_size users each)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", required=True, help="writes OUT.md")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    config, trainer, _, test_data = load_trained(args.checkpoint, {})
    model = trainer.model.eval()
    recommender = model.speculative_recommender()
    batches = []
    for interaction, *_ in test_data:
        batches.append((interaction[model.ITEM_SEQ], interaction[model.ITEM_SEQ_LEN]))
        if len(batches) == args.n_batches:
            break
    n_users = sum(seq.size(0) for seq, _ in batches)
    seconds = time_parts(model, batches, recommender.draft_size, recommender.num_beams, args.repeats)
    beam = seconds[PARTS[-1]]
    lines = [f"{config['model']} on {config['dataset']}: {n_users} test users in {len(batches)} batches, "
             f"δ = {recommender.draft_size}, β = {recommender.num_beams}, l = {recommender.n_digits}, "
             f"{torch.get_num_threads()} CPU thread(s), best of {args.repeats}", "",
             "| part | users/s | time relative to the beam search |", "|---|---|---|"]
    lines += [f"| {part} | {n_users / s:.0f} | {s / beam:.2f} |" for part, s in seconds.items()]
    table = "\n".join(lines)
    print(table)
    with atomic_write(args.out + ".md", "w") as f:
        f.write(table + "\n")


if __name__ == "__main__":
    main()
