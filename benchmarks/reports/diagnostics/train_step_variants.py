"""The compiled TIGER training step (``torch_compile: True``) today and with each of its two earlier behaviours put
back, against HF ``T5ForConditionalGeneration`` eager, alternating step by step on the same batches (one thread,
TIGER.yaml's sizes, bench_tiger_train's random batches). The earlier behaviours, as patches of today's code:

- ``padded``: cross-attention keys padded to a multiple of 16 in training too (``T5.start_cache`` before: its
  backward zero-fills the padded keys' gradients);
- ``trimmed``: the encoder input trimmed to the batch's longest history under ``torch.compile`` too (``int(max)``
  splits the compiled graph into several).

    python benchmarks/reports/diagnostics/train_step_variants.py --steps 40 --order fixed \
        --out benchmarks/reports/diagnostics/train_step_variants_fixed
    (also --order reversed, --order shuffled)
"""
import argparse
import copy
import random
import sys
import time
import types
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks"), str(Path(__file__).resolve().parent)]
import bench_tiger_train as bench  # noqa: E402
from train_step_setup import step_args  # noqa: E402
from recbole_specgr.model import t5 as t5_module  # noqa: E402


def padded_start_cache(self, enc_hidden, enc_mask):
    """``T5.start_cache`` as it was: keys padded to a multiple of 16 on a CPU, with gradients on too."""
    pad = -enc_hidden.shape[1] % t5_module.CROSS_KEYS_MULTIPLE
    cross_kv = [tuple(F.pad(x, (0, 0, 0, pad)) for x in block.cross_attn.project_kv(enc_hidden))
                for block in self.dec_blocks]
    return t5_module.KVCache(cross_kv, F.pad(enc_mask, (0, pad), value=False)[:, None, None, :], None, 0)


def trimmed_encoder_tokens(model):
    """``TIGER._encoder_tokens`` as it was: trimmed to the batch's longest history under torch.compile too."""
    today = model._encoder_tokens

    def encoder_tokens(item_seq, item_seq_len):
        tokens, mask = today(item_seq, item_seq_len)
        S = 2 + int(item_seq_len.max()) * model.n_digits
        return tokens[:, :S], mask[:, :S]

    return encoder_tokens


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--out", default="results/train_step_variants")
    parser.add_argument("--order", choices=["fixed", "reversed", "shuffled"], default="shuffled",
                        help="the systems' turns in every step: listed order, its reverse, or a new random one")
    args = parser.parse_args()
    torch.set_num_threads(1)
    setup = step_args(n_batches=4)
    base, hf, _ = bench.build_models(setup, "cpu", torch.float32)
    data = bench.batches(base, setup)
    variants = {"today": set(), "padded": {"padded"}, "padded + trimmed (before)": {"padded", "trimmed"}}
    steps, optimizers = {}, {}
    for name, patched in variants.items():  # each model its own copy, its methods patched on the instance
        model = copy.deepcopy(base).train()
        if "padded" in patched:
            model.t5.start_cache = types.MethodType(padded_start_cache, model.t5)
        if "trimmed" in patched:
            model._encoder_tokens = trimmed_encoder_tokens(model)
        steps[name] = torch.compile(model.calculate_loss)
        optimizers[name] = torch.optim.AdamW(model.parameters(), lr=1e-3)
    hf.train()
    optimizers["hf eager"] = torch.optim.AdamW(hf.parameters(), lr=1e-3)
    seconds = {name: 0.0 for name in optimizers}
    first_loss = {}
    shuffle = random.Random(0).shuffle
    for i in range(args.steps + 2):  # the first two steps (compiling) are not timed
        names = list(optimizers)
        if args.order == "reversed":
            names.reverse()
        elif args.order == "shuffled":
            shuffle(names)
        for name in names:
            batch = data[i % len(data)]
            start = time.perf_counter()
            if name == "hf eager":
                loss = hf(**batch[1]).loss
            else:
                loss = steps[name](batch[0])
            loss.backward()
            optimizers[name].step()
            optimizers[name].zero_grad(set_to_none=True)
            if i >= 2:
                seconds[name] += time.perf_counter() - start
            first_loss.setdefault(name, loss.item())
    rows = {name: args.steps * setup.batch_size / s for name, s in seconds.items()}
    lines = [f"Compiled TIGER training step, TIGER.yaml sizes, B = 256, w = 10, one thread, {args.steps} timed steps "
             f"each, alternating ({args.order} order in every step)", "",
             "| step | rows/s | / hf eager | / today | first loss |", "|---|---|---|---|---|"]
    lines += [f"| {name} | {rows[name]:.0f} | {rows[name] / rows['hf eager']:.3f}x | "
              f"{rows[name] / rows['today']:.3f}x | {first_loss[name]:.6f} |" for name in rows]
    table = "\n".join(lines)
    print(table)
    out = Path(args.out).with_suffix(".md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(table + "\n\nCommand:\n\n    python benchmarks/reports/diagnostics/train_step_variants.py --steps "
                   f"{args.steps} --order {args.order} --out {args.out}\n")


if __name__ == "__main__":
    main()
