"""Users/s of SpecGR++ speculative inference vs our TIGER beam search vs HF ``generate``, and subset-ranking latency.

Part 1 (issue 6 (1)): one SpecGR++ model of the paper's Phones size (8+8 layers, d_model 128, d_ff 2048, 111,480
items of which 15% unseen, random semantic IDs and random weights), K = 50, δ = β = 50, the same random histories for
every system. With random weights every verification score V is about the same, so γ is calibrated instead of set:
``--acceptance`` is the share of first-round drafts γ accepts (the paper reports 0.6-0.9 for trained models), which
fixes how many draft-verify rounds run. "tiger" is our constrained beam search alone (what SpecGR falls back to);
"hf" is ``T5ForConditionalGeneration.generate(num_beams=50)`` with the same dimensions (unconstrained).

Part 2 (issue 6 (3)): latency of ranking only a given subset of 10² … 10⁴ items per batch — SpecGR++ subset mode
(drafting restricted to the subset, no beam fill) vs TIGER's beam search constrained to the subset (prefix tables
rebuilt for the subset: part of its cost).

    python benchmarks/bench_specgr_speed.py --device cuda --out benchmarks/reports/specgr_speed_gpu
    python benchmarks/bench_specgr_speed.py --device cpu --threads 2 --n_items 20000 --batch_sizes 32 \
        --n_layers 2 --hidden_size 64 --inner_size 256 --min_time 0.5 --max_reps 2 --out benchmarks/reports/specgr_speed_cpu
"""

import argparse
import csv
import logging
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_tiger_beam import random_codes, timed  # noqa: E402
from recbole_specgr.atomic import atomic_write  # noqa: E402
from recbole_specgr.config import model_defaults  # noqa: E402
from recbole_specgr.data.catalog import ItemCatalog  # noqa: E402
from recbole_specgr.model.sequential_recommender.specgrpp import SpecGRPP  # noqa: E402
from recbole_specgr.model.sequential_recommender.tiger import TIGER  # noqa: E402

logger = logging.getLogger(__name__)


def build(args):
    """SpecGR++ (random weights) over random codes; the last ``unseen_share`` of the items are unseen."""
    config = model_defaults("SpecGRPP")
    config.update(
        USER_ID_FIELD="user_id", ITEM_ID_FIELD="item_id", LIST_SUFFIX="_list", ITEM_LIST_LENGTH_FIELD="item_length",
        NEG_PREFIX="neg_", MAX_ITEM_LIST_LENGTH=args.history, device=args.device, topk=[args.k],
        num_beams=args.beams, specgr_draft_size=args.draft_size, dropout_prob=0.0, specgrpp_finetune_epochs=0,
        n_layers_enc=args.n_layers, n_layers_dec=args.n_layers, hidden_size=args.hidden_size, n_heads=args.n_heads,
        d_kv=args.d_kv, inner_size=args.inner_size, specgr_drafting_backend="dense",
    )
    codes = random_codes(args.n_items, args.n_digits, args.codebook_size, args.seed)
    seen = torch.arange(args.n_items + 1) > 0
    seen[int(args.n_items * (1 - args.unseen_share)) + 1:] = False
    torch.manual_seed(args.seed)
    config["item_text_input"] = False  # synthetic items have no texts
    model = SpecGRPP(config, ItemCatalog(seen), item2codes=codes, codebook_size=args.codebook_size)
    return model.to(args.device).eval(), config, codes


def histories(B, args, seed):
    g = torch.Generator().manual_seed(seed)
    n_seen = int(args.n_items * (1 - args.unseen_share))
    item_seq = torch.randint(1, n_seen + 1, (B, args.history), generator=g).to(args.device)
    return item_seq, torch.full((B,), args.history, device=args.device)


@torch.inference_mode()
def calibrate_threshold(model, args):
    """γ = the (1 − acceptance) quantile of the first-round verification scores on a calibration batch."""
    recommender = model.speculative_recommender()
    recommender.threshold = float("-inf")
    item_seq, item_seq_len = histories(min(256, max(args.batch_sizes)), args, seed=args.seed + 99)
    out = recommender.recommend(item_seq, item_seq_len)
    first = out.draft_scores[:, 0].flatten().float()
    gamma = torch.quantile(first[torch.isfinite(first)].cpu(), 1 - args.acceptance).item()
    model.set_specgr_threshold(gamma)
    return gamma


def hf_model(config, args):
    from transformers import T5Config, T5ForConditionalGeneration

    hf_config = T5Config(
        vocab_size=TIGER.N_SPECIAL + args.n_digits * args.codebook_size, d_model=config["hidden_size"],
        d_kv=config["d_kv"], d_ff=config["inner_size"], num_layers=config["n_layers_enc"],
        num_decoder_layers=config["n_layers_dec"], num_heads=config["n_heads"], dropout_rate=0.0,
        feed_forward_proj="relu", pad_token_id=TIGER.PAD, eos_token_id=TIGER.EOS, decoder_start_token_id=TIGER.BOS,
        tie_word_embeddings=False,
    )
    return T5ForConditionalGeneration(hf_config).to(args.device).eval()


def speed_rows(model, hf, args):
    recommender = model.speculative_recommender()
    rows = []
    for B in args.batch_sizes:
        item_seq, item_seq_len = histories(B, args, seed=args.seed + B)
        tokens, mask = model._encoder_tokens(item_seq, item_seq_len)
        stats = {}

        def specgr():
            stats["out"] = recommender.recommend(item_seq, item_seq_len)

        def tiger():
            for _ in model.beam_search(model.encode(item_seq, item_seq_len), args.beams):
                pass

        def hf_generate():
            hf.generate(input_ids=tokens, attention_mask=mask.long(), num_beams=args.beams,
                        num_return_sequences=args.k, max_new_tokens=args.n_digits, min_new_tokens=args.n_digits,
                        do_sample=False)

        row = {"batch_size": B}
        for name, fn in (("specgr++", specgr), ("tiger", tiger), ("hf", hf_generate)):
            if name == "hf" and hf is None:
                continue
            try:
                with torch.inference_mode():
                    row[name] = B / timed(fn, args.device, args.min_time, args.max_reps)
            except torch.OutOfMemoryError:
                row[name] = None
                torch.cuda.empty_cache()
        summary = stats["out"].stats.summary()
        row.update(acceptance_rate=summary["acceptance_rate"], mean_rounds=summary["mean_rounds"],
                   unseen_share=summary["unseen_share"])
        logger.info(f"B={B}: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                           for k, v in row.items()))
        rows.append(row)
    return rows


def subset_rows(model, args):
    recommender = model.speculative_recommender()
    B = args.subset_batch_size
    item_seq, item_seq_len = histories(B, args, seed=args.seed + 7)
    g = torch.Generator().manual_seed(args.seed)
    rows = []
    for size in args.subset_sizes:
        subset = torch.zeros(args.n_items + 1, dtype=torch.bool)
        subset[torch.randperm(args.n_items, generator=g)[:size] + 1] = True
        subset = subset.to(args.device)

        def specgr():
            recommender.recommend(item_seq, item_seq_len, allowed_items=subset, subset_ranking=True)

        def tiger():
            for _ in model.beam_search(model.encode(item_seq, item_seq_len), args.beams, item_mask=subset):
                pass

        with torch.inference_mode():
            row = {"subset_size": size, "batch_size": B,
                   "specgr++_ms": 1e3 * timed(specgr, args.device, args.min_time, args.max_reps),
                   "tiger_ms": 1e3 * timed(tiger, args.device, args.min_time, args.max_reps)}
        logger.info(f"subset {size}: " + ", ".join(f"{k} {v:.1f}" for k, v in row.items()))
        rows.append(row)
    return rows


def ratio(a, b):
    return f"{a / b:.2f}×" if a and b else "-"


def report(args, gamma, speed, subsets):
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"cpu, {torch.get_num_threads()} threads"
    lines = [
        f"# SpecGR++ inference speed ({device})", "",
        f"Random weights, {args.n_layers}+{args.n_layers} layers, d_model {args.hidden_size}, d_ff {args.inner_size}, "
        f"{args.n_heads} heads × d_kv {args.d_kv}; {args.n_items} items ({args.unseen_share:.0%} unseen), l = "
        f"{args.n_digits}, C = {args.codebook_size}, w = {args.history}; K = {args.k}, δ = {args.draft_size}, "
        f"β = {args.beams}; γ = {gamma:.4f} calibrated to accept {args.acceptance:.0%} of first-round drafts.", "",
        "| batch | SpecGR++ users/s | TIGER beam users/s | HF generate users/s | SpecGR++ / TIGER | SpecGR++ / HF "
        "| acceptance | rounds | unseen share |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in speed:
        fmt = lambda v: "OOM" if v is None else f"{v:,.0f}"  # noqa: E731
        lines.append(f"| {r['batch_size']} | {fmt(r['specgr++'])} | {fmt(r['tiger'])} | {fmt(r.get('hf'))} | "
                     f"{ratio(r['specgr++'], r['tiger'])} | {ratio(r['specgr++'], r.get('hf'))} | "
                     f"{r['acceptance_rate']:.2f} | {r['mean_rounds']:.2f} | {r['unseen_share']:.3f} |")
    lines += ["", f"Subset ranking, batch {args.subset_batch_size}: milliseconds per batch.", "",
              "| subset size | SpecGR++ subset mode (ms) | TIGER constrained to the subset (ms) | speed-up |",
              "| --- | --- | --- | --- |"]
    for r in subsets:
        lines.append(f"| {r['subset_size']:,} | {r['specgr++_ms']:.1f} | {r['tiger_ms']:.1f} | "
                     f"{ratio(r['tiger_ms'], r['specgr++_ms'])} |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--n_items", type=int, default=111480, help="catalog size (Phones: 111,480)")
    parser.add_argument("--unseen_share", type=float, default=0.15, help="share of unseen items (Phones: 15%%)")
    parser.add_argument("--n_digits", type=int, default=4)
    parser.add_argument("--codebook_size", type=int, default=256)
    parser.add_argument("--history", type=int, default=20)
    parser.add_argument("--n_layers", type=int, default=8, help="encoder and decoder blocks (Phones: 8)")
    parser.add_argument("--hidden_size", type=int, default=128)
    parser.add_argument("--inner_size", type=int, default=2048)
    parser.add_argument("--n_heads", type=int, default=6)
    parser.add_argument("--d_kv", type=int, default=64)
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--beams", type=int, default=50)
    parser.add_argument("--draft_size", type=int, default=50)
    parser.add_argument("--acceptance", type=float, default=0.75, help="share of first-round drafts accepted")
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--subset_sizes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--subset_batch_size", type=int, default=256)
    parser.add_argument("--no_hf", action="store_true", help="skip HF generate")
    parser.add_argument("--min_time", type=float, default=2.0)
    parser.add_argument("--max_reps", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="results/bench_specgr_speed", help="writes OUT.md and OUT.csv")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)

    model, config, _ = build(args)
    gamma = calibrate_threshold(model, args)
    hf = None if args.no_hf else hf_model(config, args)
    speed = speed_rows(model, hf, args)
    subsets = subset_rows(model, args)
    text = report(args, gamma, speed, subsets)
    print(text)
    with atomic_write(args.out + ".md", "w") as f:
        f.write(text)
    with atomic_write(args.out + ".csv", "w") as f:
        writer = csv.DictWriter(f, fieldnames=sorted({k for r in speed + subsets for k in r}))
        writer.writeheader()
        writer.writerows(speed + subsets)


if __name__ == "__main__":
    main()
