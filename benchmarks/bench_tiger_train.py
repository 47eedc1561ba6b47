"""Training throughput of TIGER's T5 (``recbole_specgr/model/t5.py``) vs HF ``T5ForConditionalGeneration`` of the
same size, on the same batches: forward + cross-entropy over the full vocabulary + backward + AdamW step, rows/s.

Both models are built by ``bench_tiger_beam.build_models`` (random semantic IDs, random weights, the dimensions of
``properties/model/TIGER.yaml`` or the flags); every step trains on B random histories of w items (encoder input
``[bos, ID_1 … ID_w, eos]``, w·l + 2 tokens) and one target item (l decoder tokens). The systems alternate step by
step, so a busy machine slows both alike; ratios are from one run. They take their turns in a new (seeded) random
order every step: in one fixed order a system ran up to 6% faster late in it than right after HF's eager step
(``reports/diagnostics/train_step_variants_{fixed,reversed}.md``). ``--compile`` adds both models' steps through
``torch.compile`` (ours through :class:`~recbole_specgr.trainer.compiled_loss.CompiledLoss`, what
``torch_compile: True`` trains with); the first step, which compiles, is reported apart and never timed.

    python benchmarks/bench_tiger_train.py --threads 2 --compile --out benchmarks/reports/tiger_train_cpu
    python benchmarks/bench_tiger_train.py --threads 2 --hidden_size 128 --n_heads 6 --d_kv 64 --inner_size 1024 \\
        --n_layers_enc 4 --n_layers_dec 4 --history 20 --out benchmarks/reports/tiger_train_cpu_paper_size
"""

import argparse
import copy
import logging
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_tiger_beam import build_models  # noqa: E402
from recbole.data.interaction import Interaction  # noqa: E402
from recbole_specgr.atomic import atomic_write  # noqa: E402
from recbole_specgr.trainer.compiled_loss import CompiledLoss  # noqa: E402

logger = logging.getLogger(__name__)


def batches(ours, args):
    """``--n_batches`` fixed random batches: (interaction for ours, HF kwargs), the same rows for both."""
    g = torch.Generator().manual_seed(args.seed)
    out = []
    for _ in range(args.n_batches):
        item_seq = torch.randint(1, args.n_items + 1, (args.batch_size, args.history), generator=g)
        item_seq_len = torch.full((args.batch_size,), args.history)
        target = torch.randint(1, args.n_items + 1, (args.batch_size,), generator=g)
        interaction = Interaction({ours.ITEM_SEQ: item_seq, ours.ITEM_SEQ_LEN: item_seq_len, ours.POS_ITEM_ID: target})
        tokens, mask = ours._encoder_tokens(item_seq, item_seq_len)
        _, labels = ours._decoder_tokens(target[:, None])
        out.append((interaction, dict(input_ids=tokens, attention_mask=mask.long(), labels=labels[:, 0])))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n_items", type=int, default=1682, help="catalog size (ml-100k: 1,682)")
    parser.add_argument("--n_digits", type=int, default=4)
    parser.add_argument("--codebook_size", type=int, default=64)
    parser.add_argument("--history", type=int, default=10, help="w (TIGER.yaml: 10)")
    parser.add_argument("--beams", type=int, default=50)
    parser.add_argument("--batch_size", type=int, default=256, help="rows per step (TIGER.yaml: 256)")
    parser.add_argument("--n_batches", type=int, default=4)
    parser.add_argument("--steps", type=int, default=12, help="timed steps per system (after 2 warm-up steps)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    for key in ("hidden_size", "n_heads", "d_kv", "inner_size", "n_layers_enc", "n_layers_dec"):
        parser.add_argument(f"--{key}", type=int, default=None, help="override TIGER.yaml")
    parser.add_argument("--compile", action="store_true", help="also time both steps under torch.compile")
    parser.add_argument("--out", default="results/bench_tiger_train", help="writes OUT.md")
    args = parser.parse_args()
    args.device = "cpu"
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)

    ours, hf, _ = build_models(args, "cpu", torch.float32)
    n_params = {name: sum(p.numel() for p in m.parameters()) for name, m in (("ours", ours), ("hf", hf))}
    data = batches(ours, args)
    steps = {
        "ours": lambda b: ours.calculate_loss(b[0]),
        "hf": lambda b: hf(**b[1]).loss,
    }
    models = {"ours": ours, "hf": hf}
    if args.compile:  # separate copies, so every system trains its own weights from the same start
        ours_c, hf_c = copy.deepcopy(ours), copy.deepcopy(hf)
        ours_loss, hf_forward = CompiledLoss(ours_c.calculate_loss, "ours"), torch.compile(hf_c)
        steps.update({"ours compiled": lambda b: ours_loss(b[0]), "hf compiled": lambda b: hf_forward(**b[1]).loss})
        models.update({"ours compiled": ours_c, "hf compiled": hf_c})
    optimizers = {name: torch.optim.AdamW(m.parameters(), lr=1e-3) for name, m in models.items()}
    seconds = {name: 0.0 for name in steps}
    first_step_s = {}
    losses = {name: [] for name in steps}
    for m in models.values():
        m.train()
    order = random.Random(args.seed)
    for i in range(args.steps + 2):  # alternate the systems step by step; the first two steps warm up
        names = list(steps)
        if i >= 2:  # in a new random order each step: in a fixed one, a step right after HF's ran up to 6% slower
            order.shuffle(names)
        for name in names:
            step = steps[name]
            batch = data[i % len(data)]
            start = time.perf_counter()
            loss = step(batch)
            loss.backward()
            optimizers[name].step()
            optimizers[name].zero_grad(set_to_none=True)
            if i == 0:
                first_step_s[name] = time.perf_counter() - start
            if i >= 2:
                seconds[name] += time.perf_counter() - start
            losses[name].append(float(loss))
    rows_per_s = {name: args.steps * args.batch_size / s for name, s in seconds.items()}
    # first loss: a full-vocabulary cross-entropy of l tokens per row; ours starts near ln V, HF's initialisation
    # gives larger logits (its first loss is higher), which does not change the work per step
    vocab = ours.t5.config.vocab_size
    title = (f"TIGER training step vs HF T5ForConditionalGeneration: d_model {ours.hidden_size}, "
             f"{ours.n_layers_enc}+{ours.n_layers_dec} layers, {args.batch_size} rows of w = {args.history} items, "
             f"l = {args.n_digits}, V = {vocab}, cpu, {torch.get_num_threads()} threads, {args.steps} timed steps each")
    table = "\n".join([
        title, "",
        "| system | parameters | rows/s | first step (s) | first loss (ln V = %.2f) | / hf | / hf compiled |"
        % torch.log(torch.tensor(vocab)),
        "|---|---|---|---|---|---|---|",
        *(f"| {name} | {n_params[name.split()[0]]:,} | {rows_per_s[name]:.0f} | {first_step_s[name]:.1f} | "
          f"{losses[name][0]:.3f} | {rows_per_s[name] / rows_per_s['hf']:.2f}x | "
          + (f"{rows_per_s[name] / rows_per_s['hf compiled']:.2f}x |" if args.compile else "– |") for name in steps),
    ])
    if args.compile and ours_loss.error is not None:
        table += f"\n\nours compiled fell back to eager: {type(ours_loss.error).__name__}: {ours_loss.error}"
    print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out.with_suffix(".md"), "w") as f:
        f.write(table + "\n")


if __name__ == "__main__":
    main()
