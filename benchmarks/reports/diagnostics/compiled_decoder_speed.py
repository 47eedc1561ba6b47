"""How far ``torch.compile`` of the decoder (and encoder) blocks moves SpecGR++ and our beam search against HF's eager
``generate(num_beams=50)`` on the CPU stand-in of ``specgr_speed_cpu.md`` (synthetic Phones-like model, 2+2 layers,
d_model 64, 20,000 items, K = δ = β = 50, γ calibrated to 75% first-round acceptance, batch 32, one thread): the
same systems timed eager, then with every ``EncoderBlock``/``DecoderBlock.forward`` compiled (``dynamic=True``: the
row counts change from call to call), each compiled system warmed up on its own inputs first (compile time reported,
not timed). Issue 13's "≥ 20× HF" lead (speed_cpu.md section 19). Also checks the compiled blocks give the same
rankings as eager.

    OMP_NUM_THREADS=1 python benchmarks/reports/diagnostics/compiled_decoder_speed.py \\
        > benchmarks/reports/diagnostics/compiled_decoder_speed.txt
"""
import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_specgr_speed import build, calibrate_threshold, hf_model, histories  # noqa: E402
from bench_tiger_beam import timed  # noqa: E402

args = argparse.Namespace(device="cpu", n_items=20000, unseen_share=0.15, n_digits=4, codebook_size=256, history=20,
                          n_layers=2, hidden_size=64, inner_size=256, n_heads=6, d_kv=64, k=50, beams=50,
                          draft_size=50, acceptance=0.75, batch_sizes=[32], seed=0)
torch.set_num_threads(1)
model, config, _ = build(args)
hf = hf_model(config, args)
gamma = calibrate_threshold(model, args)
recommender = model.speculative_recommender()
B = 32
item_seq, item_seq_len = histories(B, args, seed=args.seed + B)
tokens, mask = model._encoder_tokens(item_seq, item_seq_len)


def specgr():
    return recommender.recommend(item_seq, item_seq_len).items


def tiger():
    return [step.prefixes for step in model.beam_search(model.encode(item_seq, item_seq_len), args.beams)][-1]


def hf_generate():
    hf.generate(input_ids=tokens, attention_mask=mask.long(), num_beams=args.beams, num_return_sequences=args.k,
                max_new_tokens=args.n_digits, min_new_tokens=args.n_digits, do_sample=False)


def users_per_s(fn):
    with torch.inference_mode():
        return B / timed(fn, "cpu", 3.0, 20)


print(f"gamma {gamma:.4f} (75% first-round acceptance), batch {B}, one thread")
with torch.inference_mode():
    eager_items, eager_beams = specgr(), tiger()
eager = {name: users_per_s(fn) for name, fn in (("specgr++", specgr), ("tiger", tiger), ("hf", hf_generate))}
blocks = list(model.t5.enc_blocks) + list(model.t5.dec_blocks)
for block in blocks:
    block.forward = torch.compile(block.forward, dynamic=True)
compile_s = {}
with torch.inference_mode():
    for name, fn in (("specgr++", specgr), ("tiger", tiger)):
        start = time.perf_counter()
        fn()
        compile_s[name] = time.perf_counter() - start
    same_items, same_beams = bool(torch.equal(specgr(), eager_items)), bool(torch.equal(tiger(), eager_beams))
compiled = {name: users_per_s(fn) for name, fn in (("specgr++", specgr), ("tiger", tiger))}
hf_again = users_per_s(hf_generate)
print(f"first call after compiling (s): specgr++ {compile_s['specgr++']:.1f}, tiger {compile_s['tiger']:.1f}")
print(f"same rankings as eager: specgr++ {same_items}, tiger beams {same_beams}")
print(f"{'system':10s} {'eager users/s':>14s} {'compiled users/s':>17s} {'compiled/eager':>15s}")
for name in ("specgr++", "tiger"):
    print(f"{name:10s} {eager[name]:14.1f} {compiled[name]:17.1f} {compiled[name] / eager[name]:14.2f}x")
print(f"{'hf':10s} {eager['hf']:14.1f} (again after: {hf_again:.1f})")
hf_mean = (eager["hf"] + hf_again) / 2
for name in ("specgr++", "tiger"):
    print(f"{name} / hf eager: eager {eager[name] / hf_mean:.1f}x, compiled {compiled[name] / hf_mean:.1f}x")
print(f"specgr++ / tiger: eager {eager['specgr++'] / eager['tiger']:.2f}x, "
      f"compiled {compiled['specgr++'] / compiled['tiger']:.2f}x")
