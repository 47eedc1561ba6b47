"""What one draft-verify round costs next to the beam search it would replace, per part, at batch 1 and 32, on
``bench_specgr_speed.py``'s synthetic stand-in (2+2 layers, d_model 64, 20,000 items, C = 256, K = δ = β = 50, one
thread). The ceiling of the paper's ranking is one round with every draft accepted (no beam search at all):
encoder + shared start position + drafting + verification of δ drafts, against encoder + the l-step beam search.

    OMP_NUM_THREADS=1 python benchmarks/reports/diagnostics/one_round_ceiling_parts.py \
        > benchmarks/reports/diagnostics/one_round_ceiling_parts.txt
"""
import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_specgr_speed import build, histories  # noqa: E402
from recbole_specgr.inference.drafting import DraftMask  # noqa: E402

torch.set_num_threads(1)
args = argparse.Namespace(device="cpu", n_items=20000, unseen_share=0.15, n_digits=4, codebook_size=256, history=20,
                          n_layers=2, hidden_size=64, inner_size=256, n_heads=6, d_kv=64, k=50, beams=50,
                          draft_size=50, seed=0)
model, _, _ = build(args)
recommender = model.speculative_recommender()
recommender.refresh()
recommender.threshold, recommender.unseen_threshold = float("-inf"), None  # every draft accepted: one round


def ms(fn, reps=30):
    fn()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start) / reps * 1e3


print(f"setting: {recommender.thresholds}")
for B in (1, 32):
    item_seq, item_seq_len = histories(B, args, seed=B)
    with torch.inference_mode():
        enc = model.encode(item_seq, item_seq_len)
        shared = model.share_decoding(enc, args.draft_size)
        session = recommender.draft_index.session(recommender.draft_queries(item_seq, item_seq_len, enc))
        nothing_drafted = DraftMask(None, torch.zeros(B, args.n_items + 1, dtype=torch.bool))
        drafts, _ = session.topk(args.draft_size, nothing_drafted)
        parts = {
            "encoder": ms(lambda: model.encode(item_seq, item_seq_len)),
            "shared start position": ms(lambda: model.share_decoding(enc, args.draft_size)),
            "drafting (top-δ)": ms(lambda: session.topk(args.draft_size, nothing_drafted)),
            "verification of δ drafts": ms(lambda: model.digit_log_probs(shared, drafts)),
            "beam search, l steps": ms(lambda: list(model.beam_search(enc, args.beams))),
            "recommend, one round": ms(lambda: recommender.recommend(item_seq, item_seq_len)),
        }
        rounds = recommender.recommend(item_seq, item_seq_len).stats.summary()["mean_rounds"]
    one_round = parts["encoder"] + parts["shared start position"] + parts["drafting (top-δ)"] \
        + parts["verification of δ drafts"]
    beam = parts["encoder"] + parts["beam search, l steps"]
    print(f"\nbatch {B} (mean rounds {rounds:.2f}), ms per batch:")
    for name, value in parts.items():
        print(f"  {name:<28} {value:8.2f}")
    print(f"  verification / beam search      {parts['verification of δ drafts'] / parts['beam search, l steps']:.2f}")
    print(f"  ceiling, sum of one round's parts vs encoder + beam search: {beam / one_round:.2f}x")
    print(f"  measured, recommend vs encoder + beam search:               {beam / parts['recommend, one round']:.2f}x")
