"""
recbole_specgr.tokenizer.semantic_id
####################################
Semantic IDs for every item: ``L`` quantiser codes plus one collision (identification) digit, l = L + 1.

Layout of :attr:`SemanticIDs.codes` ``[item_num, l]`` (raw codes, no vocabulary offsets — the generative model adds
its own): ``codes[i] = [c_1, …, c_L, c_{L+1}]`` with every digit in ``[0, C)``; ``c_1…c_L`` come from the residual
quantiser, ``c_{L+1}`` numbers the items sharing the prefix ``c_1…c_L``; row 0 (padding item) is all ``-1``.

Inductive protocol: the quantiser is fitted on **seen** (training) items only, then encodes every item, unseen
included. Collision digits are numbered seen items first (in item-id order), then unseen ones (in item-id order),
then items added later with :meth:`SemanticIDTokenizer.add_items`; an existing item's ID therefore never changes.

Reference: Rajput et al., "Recommender Systems with Generative Retrieval" (TIGER), NeurIPS 2023;
Ding et al., "Inductive Generative Recommendation via Retrieval-based Speculation" (SpecGR), arXiv 2410.02939.
"""

import hashlib
import json
import os
import pickle
from dataclasses import dataclass
from logging import getLogger

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from recbole_specgr.atomic import atomic_write
from recbole_specgr.threads import one_cpu_thread
from recbole_specgr.tokenizer.codes import code_stats, collision_digits
from recbole_specgr.tokenizer.rqvae import KMEANS_ITERS, RQVAE, ResidualQuantizer

FORMAT_VERSION = 2  # bump when the cached state layout or the ID assignment changes
METHODS = ("rqvae", "faiss_rq")
STRUCTURE_KEYS = ("method", "num_levels", "codebook_size", "latent_dim", "hidden_sizes")
CHUNK = 65536  # rows encoded at once


@dataclass
class SemanticIDs:
    codes: torch.LongTensor  # [item_num, l] raw codes, row 0 (padding item) = -1
    codebook_size: int  # C: every digit, the collision digit included, takes values in [0, C)
    n_digits: int  # l = L + 1


def _read(config, key, default):
    """``config[key]``, or ``default`` when the key is missing or None (RecBole Config returns None)."""
    try:
        value = config[key]
    except KeyError:
        value = None
    return default if value is None else value


class SemanticIDTokenizer:
    """Fits a residual quantiser on seen items' text embeddings and assigns l-digit semantic IDs.

    Config keys read (once, here): ``rqvae_method`` (``rqvae`` | ``faiss_rq``), ``rqvae_num_levels`` (L),
    ``rqvae_codebook_size`` (C), ``rqvae_latent_dim``, ``rqvae_hidden_sizes``, ``rqvae_epochs``,
    ``rqvae_batch_size``, ``rqvae_learning_rate``, ``rqvae_commitment_weight``, ``rqvae_kmeans_init``,
    ``cache_dir``, ``seed``, ``device``.

    ``faiss_rq`` skips the encoder: residual k-means (faiss) straight on the text embeddings.
    """

    def __init__(self, config):
        # load parameters info
        self.method = str(_read(config, "rqvae_method", "rqvae"))
        if self.method not in METHODS:
            raise ValueError(f"rqvae_method must be one of {METHODS}, got {self.method!r}")
        self.num_levels = int(_read(config, "rqvae_num_levels", 3))
        self.codebook_size = int(_read(config, "rqvae_codebook_size", 256))
        self.latent_dim = int(_read(config, "rqvae_latent_dim", 32))
        self.hidden_sizes = [int(h) for h in _read(config, "rqvae_hidden_sizes", [512, 256, 128])]
        self.epochs = int(_read(config, "rqvae_epochs", 500))
        self.show_progress = bool(_read(config, "show_progress", False))
        self.batch_size = int(_read(config, "rqvae_batch_size", 1024))
        self.learning_rate = float(_read(config, "rqvae_learning_rate", 1e-3))
        self.commitment_weight = float(_read(config, "rqvae_commitment_weight", 0.25))
        self.kmeans_init = bool(_read(config, "rqvae_kmeans_init", True))
        self.cache_dir = str(_read(config, "cache_dir", "cache"))
        self.seed = int(_read(config, "seed", 2020))
        self.device = torch.device(_read(config, "device", "cpu"))
        if self.num_levels < 1 or self.codebook_size < 2:
            raise ValueError(
                f"rqvae_num_levels must be >= 1 and rqvae_codebook_size >= 2, "
                f"got {self.num_levels} and {self.codebook_size}"
            )
        self.logger = getLogger()

        # fitted state
        self.quantizer = None  # RQVAE | ResidualQuantizer
        self.input_dim = None
        self.codes = None  # [n, l] cpu LongTensor, grows with add_items
        self.stats = {}
        self.loss_history = []  # mean training loss per epoch (rqvae)
        self.loaded_from_cache = False

    @property
    def n_digits(self) -> int:
        """l = L + 1."""
        return self.num_levels + 1

    @property
    def settings(self) -> dict:
        """Everything that determines the IDs (hashed into the cache file name)."""
        return {
            "format_version": FORMAT_VERSION,
            "method": self.method,
            "num_levels": self.num_levels,
            "codebook_size": self.codebook_size,
            "latent_dim": self.latent_dim,
            "hidden_sizes": self.hidden_sizes,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "commitment_weight": self.commitment_weight,
            "kmeans_init": self.kmeans_init,
            "seed": self.seed,
        }

    @property
    def semantic_ids(self) -> SemanticIDs:
        if self.codes is None:
            raise RuntimeError("SemanticIDTokenizer is not fitted: call fit() or load_or_fit() first")
        return SemanticIDs(self.codes, self.codebook_size, self.n_digits)

    # ------------------------------------------------------------------ fitting
    def fit(self, item_emb, seen_mask) -> SemanticIDs:
        """Fit the quantiser on seen items, then encode all items and number collisions.

        Args:
            item_emb: ``[item_num, d]`` text embeddings in item-id order, row 0 = padding.
            seen_mask: ``[item_num]`` bool, True for items present in training rows (row 0 ignored).

        Returns:
            SemanticIDs: codes ``[item_num, l]``.
        """
        emb, seen = self._check_inputs(item_emb, seen_mask)
        x = emb.to(self.device)  # [n, d]
        train_x = x[seen.to(self.device)]  # [n_seen, d]
        self.input_dim = emb.shape[1]
        self.loss_history = []
        self.loaded_from_cache = False
        self.logger.info(
            f"[TOKENIZER] fitting {self.method} on {len(train_x)} seen of {len(x) - 1} items "
            f"(L={self.num_levels}, C={self.codebook_size})"
        )
        if self.codebook_size > len(train_x):
            self.logger.warning(
                f"[TOKENIZER] rqvae_codebook_size: C = {self.codebook_size} codewords per digit for {len(train_x)} seen "
                f"items: most codes stay unused and the first digits hardly group similar items (an unseen item then "
                f"rarely shares a prefix with a seen one); set a C several times smaller than the seen items (ml-100k: "
                f"16 for 1,682 items)")
        if self.method == "rqvae":
            with one_cpu_thread(self.device):
                self._train_rqvae(train_x)
        else:
            self.quantizer = self._new_quantizer()
            self.quantizer.kmeans_init(train_x, seed=self.seed)
        self.quantizer.eval()

        prefixes = self._prefix_codes(x[1:])  # [n-1, L]
        real_ids = torch.arange(1, len(x))
        order = torch.cat([real_ids[seen[1:]], real_ids[~seen[1:]]]) - 1  # seen first, then unseen
        digits = torch.empty(len(order), dtype=torch.long)
        digits[order] = collision_digits(prefixes[order], 0, self.codebook_size)
        self.codes = torch.full((len(x), self.n_digits), -1, dtype=torch.long)
        self.codes[1:, : self.num_levels] = prefixes
        self.codes[1:, self.num_levels] = digits
        self.stats = self._compute_stats(x, seen)
        self.log_stats()
        return self.semantic_ids

    def _train_rqvae(self, train_x: torch.Tensor) -> None:
        model = self.quantizer = self._new_quantizer()
        model.fit_normalization(train_x)
        if self.kmeans_init:
            model.kmeans_init(train_x, seed=self.seed)
        optimizer = torch.optim.Adam(model.parameters(), lr=self.learning_rate)
        generator = torch.Generator().manual_seed(self.seed)
        n, shape = len(train_x), (self.num_levels, self.codebook_size)
        levels = torch.arange(self.num_levels, device=self.device)  # [L]
        log_every = max(1, self.epochs // 10)
        model.train()
        epochs = range(self.epochs)
        if self.show_progress:
            epochs = tqdm(epochs, ncols=100, desc="RQ-VAE fit")
        for epoch in epochs:
            perm = torch.randperm(n, generator=generator).to(self.device)
            total = train_x.new_zeros(())
            used = torch.zeros(shape, dtype=torch.bool, device=self.device)  # [L, C]
            for start in range(0, n, self.batch_size):
                batch = train_x[perm[start : start + self.batch_size]]  # [B, d]
                out = model(batch)
                optimizer.zero_grad()
                out.loss.backward()
                optimizer.step()
                total = total + out.loss.detach() * len(batch)
                used[levels, out.codes] = True  # [B, L] codes
            self.loss_history.append((total / n).item())
            n_reset = 0
            if epoch < self.epochs - 1 and not used.all():
                with torch.no_grad():
                    n_reset = model.quantizer.reset_dead_codes(model.encode(train_x), ~used, generator)
            if (epoch + 1) % log_every == 0 or epoch == 0:
                self.logger.info(
                    f"[TOKENIZER] epoch {epoch + 1}/{self.epochs} loss {self.loss_history[-1]:.6f}, "
                    f"re-seeded {n_reset} unused codewords"
                )

    def _new_quantizer(self):
        """An untrained quantiser on ``self.device``, initialised from ``seed``; the global RNG is left alone (a model
        built next starts the same whether the IDs were fitted or read from the cache)."""
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(self.seed)
            if self.method == "rqvae":
                dims = (self.hidden_sizes, self.latent_dim, self.num_levels, self.codebook_size, self.commitment_weight)
                return RQVAE(self.input_dim, *dims).to(self.device)
            return ResidualQuantizer(self.input_dim, self.num_levels, self.codebook_size).to(self.device)

    def _check_inputs(self, item_emb, seen_mask):
        emb = item_emb if torch.is_tensor(item_emb) else torch.from_numpy(np.asarray(item_emb, dtype=np.float32))
        emb = emb.detach().float().cpu().contiguous()
        seen = torch.as_tensor(seen_mask).detach().bool().cpu().clone()
        if emb.dim() != 2 or len(emb) < 2:
            raise ValueError(f"item_text_emb must be [item_num >= 2, d] (row 0 = padding), got {tuple(emb.shape)}")
        if seen.shape != (len(emb),):
            raise ValueError(f"seen_item_mask must have shape [{len(emb)}], got {tuple(seen.shape)}")
        seen[0] = False
        if not seen.any():
            raise ValueError("seen_item_mask marks no item as seen: the tokenizer is fitted on seen items only")
        return emb, seen

    # ------------------------------------------------------------------ encoding
    @torch.no_grad()
    def _prefix_codes(self, x: torch.Tensor) -> torch.Tensor:
        """Quantiser codes ``[N, d] -> [N, L]`` (cpu long), in chunks."""
        if self.quantizer is None:
            raise RuntimeError("SemanticIDTokenizer is not fitted: call fit() or load_or_fit() first")
        parts = []
        for start in range(0, len(x), CHUNK):
            chunk = x[start : start + CHUNK].to(self.device)
            codes = self.quantizer.item_codes(chunk) if self.method == "rqvae" else self.quantizer.quantize(chunk)
            parts.append(codes.cpu())
        return torch.cat(parts) if parts else torch.zeros(0, self.num_levels, dtype=torch.long)

    def add_items(self, new_embeddings) -> torch.LongTensor:
        """Assign IDs to items that arrive after fitting, with the trained quantiser (no refit).

        The new items get item ids ``len(codes) … len(codes) + m - 1`` in the order given; their collision digits
        continue each prefix's numbering, and existing IDs are left unchanged.

        Args:
            new_embeddings: ``[m, d]`` text embeddings (np.ndarray or tensor).

        Returns:
            torch.LongTensor: the new rows of :attr:`codes`, ``[m, l]``.
        """
        if self.codes is None:
            raise RuntimeError("SemanticIDTokenizer is not fitted: call fit() or load_or_fit() first")
        x = torch.as_tensor(new_embeddings).detach().float().cpu()
        if x.dim() != 2 or x.shape[1] != self.input_dim:
            raise ValueError(f"new_embeddings must be [m, {self.input_dim}], got {tuple(x.shape)}")
        prefixes = self._prefix_codes(x)  # [m, L]
        existing = self.codes[1:, : self.num_levels]
        digits = collision_digits(torch.cat([existing, prefixes]), len(existing), self.codebook_size)
        new_codes = torch.cat([prefixes, digits.unsqueeze(1)], dim=1)  # [m, l]
        self.codes = torch.cat([self.codes, new_codes])
        return new_codes

    # ------------------------------------------------------------------ statistics
    @torch.no_grad()
    def _reconstruction_error(self, x: torch.Tensor, train_x: torch.Tensor) -> float:
        """Relative MSE of the reconstruction of ``x``: MSE / mean per-dimension variance of the training items."""
        if self.method == "rqvae":
            return self.quantizer.reconstruction_error(x)  # already in standardised units
        variance = (train_x - train_x.mean(dim=0)).pow(2).mean().clamp_min(1e-12)
        return (F.mse_loss(self.quantizer.lookup(self.quantizer.quantize(x)), x) / variance).item()

    def _compute_stats(self, x: torch.Tensor, seen: torch.Tensor) -> dict:
        unseen = ~seen
        unseen[0] = False
        train_x = x[seen.to(x.device)]
        stats = {"n_items": len(x) - 1, "n_seen": int(seen.sum())}
        stats["recon_loss"] = self._reconstruction_error(train_x, train_x)
        if unseen.any():
            stats["recon_loss_unseen"] = self._reconstruction_error(x[unseen.to(x.device)], train_x)
        stats.update(code_stats(self.codes[1:], self.codebook_size))
        return stats

    def log_stats(self) -> None:
        s = self.stats
        usage = [round(s[f"codebook_usage_{k + 1}"], 4) for k in range(self.num_levels)]
        perplexity = [round(s[f"perplexity_{k + 1}"], 2) for k in range(self.num_levels)]
        unseen = f" (unseen {s['recon_loss_unseen']:.6f})" if "recon_loss_unseen" in s else ""
        self.logger.info(f"[TOKENIZER] items {s['n_items']} (seen {s['n_seen']}), l={self.n_digits}")
        self.logger.info(f"[TOKENIZER] reconstruction loss {s['recon_loss']:.6f}{unseen}")
        self.logger.info(f"[TOKENIZER] codebook usage per level {usage}, perplexity per level {perplexity}")
        self.logger.info(
            f"[TOKENIZER] items with collision digit > 0: {s['collision_share']:.4%}, "
            f"max items per prefix: {s['max_collisions']}"
        )

    # ------------------------------------------------------------------ persistence
    def cache_path(self, item_emb, seen_mask) -> str:
        """``<cache_dir>/semantic_ids_<method>_<hash>.pt``, hash of (embeddings, seen mask, settings, the device type
        the fit runs on, k-means' iterations): a fit on a GPU gives other codes than on a CPU."""
        emb, seen = self._check_inputs(item_emb, seen_mask)
        digest = hashlib.sha256()
        digest.update(str(tuple(emb.shape)).encode())
        digest.update(emb.numpy().tobytes())
        digest.update(seen.numpy().tobytes())
        digest.update(json.dumps(self.settings, sort_keys=True).encode())
        digest.update(f"{self.device.type}|{KMEANS_ITERS}".encode())
        return os.path.join(self.cache_dir, f"semantic_ids_{self.method}_{digest.hexdigest()[:16]}.pt")

    def load_or_fit(self, item_emb, seen_mask) -> SemanticIDs:
        """Reuse the cached IDs for these inputs and settings, else :meth:`fit` and cache the result."""
        path = self.cache_path(item_emb, seen_mask)
        if os.path.exists(path):
            try:
                self.load(path)
            except (OSError, RuntimeError, EOFError, KeyError, ValueError, pickle.UnpicklingError) as err:
                self.logger.warning(f"[TOKENIZER] unreadable cache {path} ({err}); refitting")
            else:
                self.loaded_from_cache = True
                self.logger.info(f"[TOKENIZER] loaded semantic IDs from {path}")
                self.log_stats()
                return self.semantic_ids
        ids = self.fit(item_emb, seen_mask)
        self.save(path)
        return ids

    def state_dict(self) -> dict:
        """Everything needed to encode further items: settings, quantiser weights, codes, stats."""
        if self.codes is None:
            raise RuntimeError("SemanticIDTokenizer is not fitted: call fit() or load_or_fit() first")
        return {
            "settings": self.settings,
            "input_dim": self.input_dim,
            "quantizer": {k: v.detach().cpu() for k, v in self.quantizer.state_dict().items()},
            "codes": self.codes.clone(),
            "stats": dict(self.stats),
            "loss_history": list(self.loss_history),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a fitted tokenizer; its structural settings must match this tokenizer's config."""
        saved = state["settings"]
        if saved.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"tokenizer state has format_version {saved.get('format_version')}, need {FORMAT_VERSION}")
        for key in STRUCTURE_KEYS:
            if saved[key] != self.settings[key]:
                raise ValueError(
                    f"tokenizer state has rqvae_{key}={saved[key]!r} but the config has {self.settings[key]!r}"
                )
        self.input_dim = int(state["input_dim"])
        self.quantizer = self._new_quantizer()
        self.quantizer.load_state_dict(state["quantizer"])
        self.quantizer.eval()
        self.codes = state["codes"].long().clone()
        self.stats = dict(state["stats"])
        self.loss_history = list(state["loss_history"])

    def save(self, path: str) -> None:
        """Write :meth:`state_dict` atomically (temp file in the same folder, then ``os.replace``)."""
        with atomic_write(path) as f:
            torch.save(self.state_dict(), f)
        self.logger.info(f"[TOKENIZER] saved semantic IDs to {path}")

    def load(self, path: str) -> None:
        self.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))


def load_or_fit_tokenizer(config, dataset) -> SemanticIDTokenizer:
    """A fitted tokenizer for ``dataset.item_text_emb`` / ``dataset.seen_item_mask`` (cached in ``cache_dir``)."""
    tokenizer = SemanticIDTokenizer(config)
    tokenizer.load_or_fit(dataset.item_text_emb, dataset.seen_item_mask)
    return tokenizer


def get_semantic_ids(config, dataset) -> SemanticIDs:
    """Semantic IDs of every item of ``dataset`` (unseen included), fitted on seen items, cached."""
    return load_or_fit_tokenizer(config, dataset).semantic_ids
