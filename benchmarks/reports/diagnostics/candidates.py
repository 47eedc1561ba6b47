"""The candidate dump the joint-ranking diagnostics share: for every valid and test user of one SpecGR++ checkpoint,
the drafts of all l rounds (no adaptive exit) ∪ the complete beams B_l with their Eq. 2 scores V, the drafter's
logits s_d = q·e / τ over the whole catalog, and the targets. Scripts add their own per-batch columns through
``extra``.
"""
import math
import sys
from pathlib import Path
from typing import Callable, Dict, Optional

import torch

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_gamma_sweep import load_trained  # noqa: E402
from recbole_specgr.inference.specgr import Thresholds  # noqa: E402
from recbole_specgr.model.speculative import allowed_items  # noqa: E402

Extra = Callable[..., Dict[str, torch.Tensor]]  # (rec, seq, seq_len, enc, seen) -> {name: [B, ...]}


def dump_candidates(checkpoint: str, extra: Optional[Extra] = None):
    """Returns the model, its speculative recommender and ``{split: columns}``, columns ``base`` [U, n] (V of the
    user's candidates, −inf elsewhere), ``sd`` [U, n], ``targets`` [U], ``seen`` [n] and those of ``extra``."""
    _, trainer, valid_data, test_data = load_trained(checkpoint, {"show_progress": False})
    model = trainer.model
    model.eval()
    rec = model.speculative_recommender()
    rec.no_adaptive_exit = True
    n_digits, n_items = rec.n_digits, rec.n_items
    data = {}
    with torch.no_grad():
        for split, loader in (("valid", valid_data), ("test", test_data)):
            seen = loader._dataset.seen_item_mask
            parts = {}
            for inter, *_ in loader:
                inter = trainer.with_exclusions(inter, loader._dataset)
                allowed = allowed_items(inter)
                allowed = None if allowed is None else allowed.bool()
                seq, seq_len = inter[model.ITEM_SEQ], inter[model.ITEM_SEQ_LEN]
                rounds = rec._draft_rounds(seq, seq_len, Thresholds(0.0, 0.0), allowed)
                fill = rec._advance(rounds.beam_steps, rounds.beams, n_digits)
                base = torch.full((seq.size(0), n_items), -math.inf)
                beam_items = fill.items.masked_fill(~fill.valid, 0)
                beam_v = (fill.scores.float() / fill.depth).masked_fill(~fill.valid, -math.inf)
                if allowed is not None:
                    beam_v = beam_v.masked_fill(~(allowed.gather(1, beam_items) if allowed.dim() == 2
                                                  else allowed[beam_items]), -math.inf)
                base.scatter_reduce_(1, beam_items, beam_v, reduce="amax")
                base.scatter_reduce_(1, rounds.cand.flatten(1), rounds.cand_scores.flatten(1), reduce="amax")
                base[:, 0] = -math.inf
                enc = rec.verifier.encode(seq, seq_len)
                columns = {
                    "base": base,
                    "sd": rec.draft_queries(seq, seq_len, enc) @ rec.draft_index.item_vectors.float().T
                    / model.temperature,
                    "targets": inter[trainer.item_field],
                }
                if extra is not None:
                    columns.update(extra(rec, seq, seq_len, enc, seen))
                for name, value in columns.items():
                    parts.setdefault(name, []).append(value)
            data[split] = {k: torch.cat(v) for k, v in parts.items()} | {"seen": seen}
    return model, rec, data
