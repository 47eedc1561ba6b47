"""Item text embeddings: the packaged encoder, and a cache keyed by texts and encoder."""

import logging
import os
import re
import socket

import numpy as np
import pytest
import torch

import recbole_specgr.data.text_embedding as te


@pytest.fixture
def counting_encoder(monkeypatch):
    """Replace the sentence-transformers call by a deterministic fake that counts its calls."""
    calls = []

    def fake_encode(texts, encoder, batch_size=64, device="cpu", show_progress=False):
        calls.append((tuple(texts), encoder))
        return np.array([[len(t), hash(encoder) % 7] for t in texts], dtype=np.float32)

    monkeypatch.setattr(te, "encode_texts", fake_encode)
    return calls


def test_cache_is_reused_and_rebuilt_when_texts_or_encoder_change(tmp_path, counting_encoder):
    texts = ["a red phone", "a blue case"]
    first = te.load_or_encode(texts, "enc-A", str(tmp_path), show_progress=False)
    again = te.load_or_encode(texts, "enc-A", str(tmp_path), show_progress=False)
    assert len(counting_encoder) == 1 and np.array_equal(first, again)
    te.load_or_encode(texts[:1] + ["a green case"], "enc-A", str(tmp_path), show_progress=False)
    assert len(counting_encoder) == 2  # a changed text re-encodes
    te.load_or_encode(texts, "enc-B", str(tmp_path), show_progress=False)
    assert len(counting_encoder) == 3  # a changed encoder re-encodes
    files = os.listdir(tmp_path / "text_emb")
    assert len(files) == 3 and all(f.endswith(".npy") for f in files)  # no temporary file left behind


def test_cache_is_rebuilt_when_a_local_encoders_files_or_the_batch_size_change(tmp_path, counting_encoder):
    """A local encoder folder whose weights change in place, or another text_batch_size (padding to a batch's longest
    text moves the vectors' last bits), gives another cache entry; the same folder and batch size read it back."""
    model = tmp_path / "my-encoder"
    (model / "1_Pooling").mkdir(parents=True)
    (model / "model.safetensors").write_bytes(b"weights v1")
    (model / "1_Pooling" / "config.json").write_text("{}")
    texts, cache = ["a red phone", "a blue case"], str(tmp_path / "cache")
    te.load_or_encode(texts, str(model), cache, show_progress=False)
    te._folder_digests.clear()  # a new process
    te.load_or_encode(texts, str(model), cache, show_progress=False)
    assert len(counting_encoder) == 1
    (model / "model.safetensors").write_bytes(b"weights v2")
    te._folder_digests.clear()
    te.load_or_encode(texts, str(model), cache, show_progress=False)
    assert len(counting_encoder) == 2
    te.load_or_encode(texts, str(model), cache, batch_size=16, show_progress=False)
    assert len(counting_encoder) == 3 and len(os.listdir(tmp_path / "cache" / "text_emb")) == 3
    assert te.cache_key(texts, str(model), 16, "cuda:1") != te.cache_key(texts, str(model), 16, "cpu")
    assert te.cache_key(texts, str(model), 16, "cuda:1") == te.cache_key(texts, str(model), 16, "cuda")


@pytest.mark.parametrize("damage", [lambda b: b"", lambda b: b[: len(b) // 2], lambda b: b"not numpy"],
                         ids=["empty", "cut-short", "overwritten"])
def test_an_unreadable_cache_file_is_encoded_again_with_a_warning(tmp_path, counting_encoder, caplog, damage):
    texts = ["a red phone", "a blue case"]
    first = te.load_or_encode(texts, "enc-A", str(tmp_path), show_progress=False)
    (path,) = (tmp_path / "text_emb").iterdir()
    path.write_bytes(damage(path.read_bytes()))
    again = te.load_or_encode(texts, "enc-A", str(tmp_path), show_progress=False)
    assert len(counting_encoder) == 2 and np.array_equal(first, again)
    assert "encoding the texts again" in caplog.text and str(path) in caplog.text
    assert np.array_equal(np.load(path), first)  # the cache file is whole again


def test_encoding_or_reading_the_cache_leaves_the_global_rng_alone(tmp_path, monkeypatch):
    """The model built after the embeddings must start the same whether they were computed or cached; an encoder
    that draws random numbers (e.g. a module initialised before its weights are loaded) must not move the RNG."""
    class DrawingModel:
        def encode(self, texts, **kwargs):
            torch.rand(3)
            return np.ones((len(texts), 2), dtype=np.float32)

    def drawing_load(encoder, device):
        torch.rand(3)
        return DrawingModel()

    monkeypatch.setattr(te, "_load_encoder", drawing_load)
    for _ in ("computed", "read"):
        torch.manual_seed(0)
        before = torch.get_rng_state()
        te.load_or_encode(["a red phone"], "enc", str(tmp_path), show_progress=False)
        assert torch.equal(torch.get_rng_state(), before)


def test_failed_encoding_leaves_no_cache_file(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("encoder crashed")

    monkeypatch.setattr(te, "encode_texts", broken)
    with pytest.raises(RuntimeError, match="^encoder crashed$"):
        te.load_or_encode(["x"], "enc", str(tmp_path), show_progress=False)
    assert not (tmp_path / "text_emb").exists() or not os.listdir(tmp_path / "text_emb")


def test_packaged_minilm_encodes_offline(monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("network access in an offline test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(te, "_loaded_encoders", {})  # load it here, not from another test's cache
    assert os.path.isfile(os.path.join(te.resolve_encoder("all-MiniLM-L6-v2"), "modules.json"))  # the packaged copy
    texts = ["Toy Story. 1995. Animation", "Toy Story 2. 1999. Animation", "GoldenEye. 1995. Action"]
    emb = te.encode_texts(texts)
    assert emb.shape == (3, 384) and emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)  # the model ends in a Normalize layer
    sim = emb @ emb.T
    assert sim[0, 1] > sim[0, 2] and sim[0, 1] > sim[1, 2]  # the sequel is nearer than the unrelated film
    assert np.allclose(te.encode_texts(texts[2:]), emb[2:], atol=1e-5)  # one text's vector does not depend on the batch


def test_texts_the_encoder_cuts_are_counted_in_a_warning(caplog):
    """sentence-transformers embeds the first 256 tokens of a longer text without a word."""
    texts = ["Toy Story. 1995. Animation", "An epic. " + "word " * 400, "Heat. 1995. Action"]
    with caplog.at_level(logging.WARNING):
        emb = te.encode_texts(texts)
    warned = [r.getMessage() for r in caplog.records if "[TEXT]" in r.getMessage()]
    assert len(warned) == 1 and re.fullmatch(r"\[TEXT\] 1 of 3 texts are longer than the 256 tokens the encoder reads "
                                             r"\(the longest: \d{3}\); only their first 256 tokens are embedded",
                                             warned[0]), warned
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        te.encode_texts(texts[::2])
    assert not [r for r in caplog.records if "[TEXT]" in r.getMessage()] and emb.shape == (3, 384)


def test_texts_are_encoded_on_one_cpu_thread_and_the_thread_count_is_restored(monkeypatch):
    """Two threads gave other last bits on ml-100k (up to 1.4e-7), hence other semantic IDs: one thread, always."""
    threads_seen = []

    class RecordingModel:
        def encode(self, texts, **kwargs):
            threads_seen.append(torch.get_num_threads())
            return np.zeros((len(texts), 2), dtype=np.float32)

    monkeypatch.setattr(te, "_load_encoder", lambda encoder, device: RecordingModel())
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        te.encode_texts(["a red phone"])
        assert threads_seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_unknown_encoder_is_a_clear_error():
    with pytest.raises(ValueError, match=r"text_encoder '/no/such/model': cannot load"):
        te.encode_texts(["x"], encoder="/no/such/model")
