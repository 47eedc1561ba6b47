"""
recbole_specgr.new_items
########################
Items that arrive after training: add them to a trained SpecGR++ checkpoint and recommend, without retraining.

The texts are embedded with the text encoder the model was trained with, the saved semantic-ID tokenizer assigns
their IDs (quantiser unchanged, collision digits numbered on), and the model appends them to its item tables as
unseen items: the verifier scores them over their l−1 semantic digits and the drafter embeds them from their IDs::

    python -m recbole_specgr.new_items --checkpoint saved/SpecGRPP-xxx.pth --items new.tsv --history "1 2 3" --topk 10

``new.tsv`` (optional: without ``--items`` the trained catalogue alone) has the header line ``item_id<TAB>text`` and
one item per line; ``--history`` lists raw item ids, oldest first (new items may appear in it). Output: one line per recommended item with its rank, raw id, score and ``new``
for items added here.
"""

import argparse
from collections import Counter

import torch
from recbole.data.interaction import Interaction

from recbole_specgr.cli import exit_with_error
from recbole_specgr.config import SavedConfig
from recbole_specgr.data.text_embedding import DEFAULT_ENCODER, encode_texts
from recbole_specgr.tokenizer.semantic_id import SemanticIDTokenizer

HEADER = ["item_id", "text"]


def read_new_items(path):
    """``(item_ids, texts)`` from a TSV file with the header ``item_id<TAB>text``.

    Raises:
        ValueError: naming the file and line of the first malformed line, empty field or repeated id.
    """
    ids, texts, seen = [], [], set()
    with open(path, encoding="utf-8") as f:
        try:
            lines = f.readlines()
        except UnicodeDecodeError as err:
            raise ValueError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
        for number, line in enumerate(lines, start=1):
            fields = line.rstrip("\r\n").split("\t")
            if number == 1:
                if fields != HEADER:
                    raise ValueError(f"{path}:1: expected the header 'item_id<TAB>text', got {line.rstrip()!r}")
                continue
            if not line.strip():
                continue
            if len(fields) != 2 or not fields[0].strip() or not fields[1].strip():
                raise ValueError(
                    f"{path}:{number}: expected 'item_id<TAB>text' with both non-empty, got {line.rstrip()!r}"
                )
            item_id = fields[0].strip()
            if item_id in seen:
                raise ValueError(f"{path}:{number}: item id {item_id!r} appears twice")
            seen.add(item_id)
            ids.append(item_id)
            texts.append(fields[1].strip())
    if not ids:
        raise ValueError(f"{path}: no items after the header")
    return ids, texts


def load_model(checkpoint_path, device="cpu", **overrides):
    """The SpecGR++ model of a checkpoint, in eval mode, rebuilt without its dataset
    (:meth:`~recbole_specgr.model.sequential_recommender.tiger.TIGER.from_checkpoint`); its settings are
    ``model.config``.

    Raises:
        ValueError: not a SpecGR++ checkpoint, or one without the saved tokenizer and item ids.
    """
    from recbole_specgr.model.sequential_recommender.specgrpp import SpecGRPP

    model = SpecGRPP.from_checkpoint(checkpoint_path, device=device, **overrides)
    if model.tokenizer_state is None or model.item_tokens is None:
        raise ValueError(f"--checkpoint: {checkpoint_path} lacks the tokenizer state / item ids (saved by SpecGRPP)")
    return model


def add_new_items(model, item_ids, texts, batch_size=64):
    """Embed ``texts``, give them semantic IDs with the model's saved tokenizer and append them to ``model``.

    Args:
        model (SpecGRPP): from :func:`load_model`.
        item_ids (list[str]): raw ids of the new items (not yet in the model).
        texts (list[str]): one text per item.

    Returns:
        torch.Tensor: the new items' internal ids ``[m]``.
    """
    config = model.config
    item_ids, texts = list(item_ids), list(texts)
    if len(item_ids) != len(texts) or not item_ids:
        raise ValueError(f"--items: expected one text per item id, got {len(item_ids)} ids and {len(texts)} texts")
    bad = [i for i in item_ids if not isinstance(i, str) or not i.strip()]
    if bad:
        raise ValueError(f"--items: expected non-empty string ids, got {bad[:5]}")
    empty = [i for i, text in zip(item_ids, texts) if not isinstance(text, str) or not text.strip()]
    if empty:
        raise ValueError(f"--items: expected a non-empty text for every item, none for {empty[:5]}")
    repeated = sorted(item for item, count in Counter(item_ids).items() if count > 1)
    if repeated:
        raise ValueError(f"--items: item ids given twice: {repeated[:5]}")
    known = set(model.item_tokens)
    clash = [i for i in item_ids if i in known]
    if clash:
        raise ValueError(f"--items: item ids already in the model: {clash[:5]}")
    device = model.item2codes.device
    emb = encode_texts(texts, config["text_encoder"] or DEFAULT_ENCODER, batch_size=batch_size, device=str(device))
    tokenizer = SemanticIDTokenizer(SavedConfig({**config, "device": "cpu"}))  # the quantiser runs on the CPU
    tokenizer.load_state_dict(model.tokenizer_state)
    if len(tokenizer.codes) != model.n_items:
        raise ValueError(f"tokenizer_state: {len(tokenizer.codes)} items, but the model has {model.n_items}")
    new_ids = model.add_items(tokenizer.add_items(emb), text_emb=emb if model.text_input else None)
    model.item_tokens = list(model.item_tokens) + list(item_ids)
    model.tokenizer_state = tokenizer.state_dict()
    return new_ids


@torch.no_grad()
def recommend(model, history, topk=10):
    """Top-``topk`` items after ``history`` (raw ids, oldest first): ``[(raw id, score, internal id)]``, best first.

    Raises:
        ValueError: ``topk`` above the K = max(``topk`` of the config) items speculative inference lists, or an
            unknown history item.
    """
    _check_topk(topk)
    listed = model.speculative_recommender().topk  # K
    if topk > listed:
        raise ValueError(f"--topk: expected at most {listed}, the K items this model's speculative inference lists "
                         f"(max of its config's topk), got {topk}")
    index = {token: i for i, token in enumerate(model.item_tokens) if i > 0}
    unknown = [h for h in history if h not in index]
    if not history or unknown:
        raise ValueError(f"--history: expected known item ids, got unknown {unknown}" if unknown else
                         "--history: expected at least one item id")
    ids = [index[h] for h in history][-model.max_seq_length:]
    device = model.item2codes.device
    interaction = Interaction({
        model.ITEM_SEQ: torch.tensor([ids], device=device),
        model.ITEM_SEQ_LEN: torch.tensor([len(ids)], device=device),
    })
    scores = model.full_sort_predict(interaction)[0]  # [n]
    top, items = scores.topk(min(topk, int(torch.isfinite(scores).sum())))
    return [(model.item_tokens[i], float(s), i) for s, i in zip(top.tolist(), items.tolist())]


def _check_topk(topk):
    if isinstance(topk, bool) or not isinstance(topk, int) or topk < 1:
        raise ValueError(f"--topk: expected an int >= 1, got {topk!r}")


def main(argv=None):
    parser = argparse.ArgumentParser(description="Recommend with a SpecGR++ checkpoint, optionally adding new items "
                                                 "to its catalogue first.")
    parser.add_argument("--checkpoint", required=True, help="a SpecGRPP checkpoint (.pth)")
    parser.add_argument("--items", default=None, help="TSV file of items added after training: a header line "
                        "'item_id<TAB>text', then one item per line (default: none, the trained catalogue only)")
    parser.add_argument("--history", required=True, help="space-separated raw item ids, oldest first")
    parser.add_argument("--topk", type=int, default=10,
                        help="number of items to print, at most the model's K (max of its config's topk, e.g. 50)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    try:
        _check_topk(args.topk)  # before the model loads
        try:
            device = torch.device(args.device)
        except RuntimeError as err:
            raise ValueError(f"--device: {err}") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"--device: {args.device}, but torch sees no CUDA device")
        item_ids, texts = read_new_items(args.items) if args.items else ([], [])
        model = load_model(args.checkpoint, device=args.device)
        first_new = model.n_items
        if item_ids:
            add_new_items(model, item_ids, texts)
        results = recommend(model, args.history.split(), args.topk)
    except (OSError, ValueError) as err:
        exit_with_error(err)
    print("rank\titem_id\tscore\tnew")  # the command's output
    for rank, (token, score, item) in enumerate(results, start=1):
        print(f"{rank}\t{token}\t{score:.4f}\t{'new' if item >= first_new else ''}")


if __name__ == "__main__":
    main()
