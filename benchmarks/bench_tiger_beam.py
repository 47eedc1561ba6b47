"""Users/s of TIGER's constrained beam search vs HF ``T5ForConditionalGeneration.generate`` of the same size.

Both models have random weights and the dimensions of ``properties/model/TIGER.yaml`` (or the flags); both get the
same random histories of ``--history`` items, encode them once and return K = β sequences per user. Ours is
constrained to real items (dense prefix tables); HF's is plain beam search (``--hf_constrained`` adds HF with a
``prefix_allowed_tokens_fn`` trie, the usual way to constrain it). Ratios are measured in the same run.

    python benchmarks/bench_tiger_beam.py --device cuda --out results/bench_tiger_beam
    python benchmarks/bench_tiger_beam.py --device cpu --threads 1 --n_items 2000 --hidden_size 64 --inner_size 256 \
        --n_heads 2 --d_kv 32 --n_layers_enc 2 --n_layers_dec 2 --best_batch_sizes 64 --min_time 0.5 --max_reps 3 \
        --hf_constrained --out results/bench_tiger_beam_cpu
"""

import argparse
import csv
import logging
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recbole_specgr.config import model_defaults  # noqa: E402
from recbole_specgr.data.catalog import ItemCatalog  # noqa: E402
from recbole_specgr.model.sequential_recommender.tiger import TIGER  # noqa: E402

logger = logging.getLogger(__name__)


def random_codes(n_items, n_digits, codebook_size, seed):
    """Distinct random codes for items 1..n_items (first digits random, the last one numbers collisions)."""
    g = torch.Generator().manual_seed(seed)
    prefixes = torch.randint(0, codebook_size, (n_items, n_digits - 1), generator=g)
    key = torch.zeros(n_items, dtype=torch.long)
    for j in range(n_digits - 1):
        key = key * codebook_size + prefixes[:, j]
    order = torch.argsort(key, stable=True)
    sorted_key = key[order]
    start = torch.ones_like(sorted_key, dtype=torch.bool)
    start[1:] = sorted_key[1:] != sorted_key[:-1]
    first = torch.cummax(torch.where(start, torch.arange(n_items), 0), 0).values
    last = torch.empty(n_items, dtype=torch.long)
    last[order] = torch.arange(n_items) - first
    if last.max() >= codebook_size:
        raise ValueError("codebook too small for this many items: raise --codebook_size")
    return torch.cat([torch.full((1, n_digits), -1), torch.cat([prefixes, last[:, None]], 1)]).long()


def build_models(args, device, dtype):
    from transformers import T5Config, T5ForConditionalGeneration

    config = model_defaults("TIGER")
    config.update(
        USER_ID_FIELD="user_id", ITEM_ID_FIELD="item_id", LIST_SUFFIX="_list", ITEM_LIST_LENGTH_FIELD="item_length",
        NEG_PREFIX="neg_", MAX_ITEM_LIST_LENGTH=args.history, device=device, topk=[args.beams],
        num_beams=args.beams, tiger_allow_unseen=True,
    )
    for key in ("hidden_size", "n_heads", "d_kv", "inner_size", "n_layers_enc", "n_layers_dec"):
        if getattr(args, key) is not None:
            config[key] = getattr(args, key)
    codes = random_codes(args.n_items, args.n_digits, args.codebook_size, args.seed)
    torch.manual_seed(args.seed)
    ours = TIGER(config, ItemCatalog(torch.arange(args.n_items + 1) > 0), item2codes=codes, codebook_size=args.codebook_size)
    hf_config = T5Config(
        vocab_size=TIGER.N_SPECIAL + args.n_digits * args.codebook_size, d_model=config["hidden_size"],
        d_kv=config["d_kv"], d_ff=config["inner_size"], num_layers=config["n_layers_enc"],
        num_decoder_layers=config["n_layers_dec"], num_heads=config["n_heads"], dropout_rate=config["dropout_prob"],
        feed_forward_proj="relu", pad_token_id=TIGER.PAD, eos_token_id=TIGER.EOS, decoder_start_token_id=TIGER.BOS,
        tie_word_embeddings=False,
    )
    hf = T5ForConditionalGeneration(hf_config)
    return ours.to(device, dtype).eval(), hf.to(device, dtype).eval(), codes


def hf_prefix_fn(codes, codebook_size):
    """The usual HF constraint: a Python trie queried once per hypothesis per step."""
    trie = {}
    for row in codes[1:].tolist():
        for j in range(len(row)):
            prefix = tuple(TIGER.N_SPECIAL + i * codebook_size + c for i, c in enumerate(row[:j]))
            trie.setdefault(prefix, set()).add(TIGER.N_SPECIAL + j * codebook_size + row[j])
    trie = {k: sorted(v) for k, v in trie.items()}

    def allowed(batch_id, input_ids):
        return trie.get(tuple(input_ids[1:].tolist()), [TIGER.PAD])

    return allowed


def make_inputs(ours, B, history, n_items, device, seed):
    g = torch.Generator().manual_seed(seed)
    item_seq = torch.randint(1, n_items + 1, (B, history), generator=g).to(device)
    item_seq_len = torch.full((B,), history, device=device)
    tokens, mask = ours._encoder_tokens(item_seq, item_seq_len)
    return item_seq, item_seq_len, tokens, mask


def timed(fn, device, min_time, max_reps):
    """Seconds per call: one warm-up, then repeat until ``min_time`` or ``max_reps``."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    fn()
    sync()
    reps, start = 0, time.perf_counter()
    while reps < max_reps and (reps == 0 or time.perf_counter() - start < min_time):
        fn()
        reps += 1
    sync()
    return (time.perf_counter() - start) / reps


def measure(systems, B, args, ours):
    """users/s of every system at batch size B (None where it ran out of memory)."""
    item_seq, item_seq_len, tokens, mask = make_inputs(ours, B, args.history, args.n_items, args.device, args.seed)
    out = {}
    for name, run in systems.items():
        try:
            with torch.inference_mode():
                seconds = timed(lambda: run(item_seq, item_seq_len, tokens, mask), args.device, args.min_time,
                                args.max_reps)
            out[name] = B / seconds
        except torch.OutOfMemoryError:
            out[name] = None
            torch.cuda.empty_cache()
        logger.info(f"B={B} {name}: {out[name] and round(out[name], 1)} users/s")
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--n_items", type=int, default=25612, help="catalog size (Games: 25,612)")
    parser.add_argument("--n_digits", type=int, default=4, help="l = rqvae levels + collision digit")
    parser.add_argument("--codebook_size", type=int, default=256)
    parser.add_argument("--history", type=int, default=20, help="w, items per history")
    parser.add_argument("--beams", type=int, default=50, help="β = K")
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 32, 256])
    parser.add_argument("--best_batch_sizes", type=int, nargs="*", default=[512, 1024, 2048],
                        help="extra batch sizes tried (with the above) for each system's best throughput")
    parser.add_argument("--hf_constrained", action="store_true", help="also time HF with prefix_allowed_tokens_fn")
    parser.add_argument("--min_time", type=float, default=2.0, help="seconds of timed calls per measurement")
    parser.add_argument("--max_reps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (1 avoids OpenMP stalls on a busy, small CPU)")
    for key in ("hidden_size", "n_heads", "d_kv", "inner_size", "n_layers_enc", "n_layers_dec"):
        parser.add_argument(f"--{key}", type=int, default=None, help="override TIGER.yaml")
    parser.add_argument("--out", default="results/bench_tiger_beam", help="writes OUT.md and OUT.csv")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    ours, hf, codes = build_models(args, args.device, dtype)
    l = args.n_digits

    def run_ours(item_seq, item_seq_len, tokens, mask):
        for step in ours.beam_search(ours.encode(item_seq, item_seq_len), args.beams):
            pass
        return step.items

    def run_hf(item_seq, item_seq_len, tokens, mask, **kwargs):
        return hf.generate(input_ids=tokens, attention_mask=mask.long(), num_beams=args.beams,
                           num_return_sequences=args.beams, max_new_tokens=l, min_new_tokens=l, do_sample=False,
                           **kwargs)

    systems = {"ours": run_ours, "hf": run_hf}
    if args.hf_constrained:
        prefix_fn = hf_prefix_fn(codes, args.codebook_size)
        systems["hf_constrained"] = lambda *a: run_hf(*a, prefix_allowed_tokens_fn=prefix_fn)

    rows = [dict(batch_size=B, **measure(systems, B, args, ours)) for B in args.batch_sizes]
    extra = [dict(batch_size=B, **measure(systems, B, args, ours)) for B in args.best_batch_sizes
             if B not in args.batch_sizes]
    rows.append(best_row(rows + extra, list(systems)))

    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    title = (f"TIGER beam search, β = K = {args.beams}, n = {args.n_items} items, l = {l}, C = {args.codebook_size}, "
             f"w = {args.history}, {args.device} ({device_name}), {args.dtype}, d_model {ours.hidden_size}, "
             f"{ours.n_layers_enc}+{ours.n_layers_dec} layers, {torch.get_num_threads()} CPU threads")
    table = format_table(rows, list(systems), title)
    print(table)
    write_outputs(args.out, table, rows, list(systems))


def best_row(rows, names):
    """Each system's highest throughput over all batch sizes tried, and the batch size it came at."""
    best = {"batch_size": "best"}
    for name in names:
        scored = [r for r in rows if r[name] is not None]
        top = max(scored, key=lambda r: r[name]) if scored else {name: None, "batch_size": None}
        best[name], best[f"{name}_at"] = top[name], top["batch_size"]
    return best


def format_table(rows, names, title):
    def cell(r, name):
        if r[name] is None:
            return "OOM"
        at = f" (B={r[name + '_at']})" if f"{name}_at" in r else ""
        return f"{r[name]:.1f}{at}"

    def ratio(r, name):
        return "-" if r[name] is None or r["ours"] is None else f"{r['ours'] / r[name]:.2f}x"

    header = ["batch size"] + [f"{n} users/s" for n in names] + [f"ours / {n}" for n in names[1:]]
    lines = [title, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [str(r["batch_size"])] + [cell(r, n) for n in names] + [ratio(r, n) for n in names[1:]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_outputs(out, table, rows, names):
    """OUT.md (the table) and OUT.csv (one row per batch size; ``<system>_at`` = batch size of the best row)."""
    out = Path(out)
    out = out.with_suffix("") if out.suffix in (".md", ".csv") else out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(table + "\n")
    fields = ["batch_size"] + names + [f"{n}_at" for n in names]
    with open(out.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(rows)
    logger.info(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.csv')}")


if __name__ == "__main__":
    main()
