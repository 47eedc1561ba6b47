"""
recbole_specgr.tokenizer.rqvae
##############################
Residual quantisation of item text embeddings into L codes per item (no RecBole imports).

* :class:`ResidualQuantizer` — ``L`` residual codebooks of size ``C`` over a ``d``-dimensional space. Used alone it
  is plain residual k-means (the tokenizer's ``faiss_rq`` option); inside :class:`RQVAE` it quantises the latent.
* :class:`RQVAE` — MLP encoder → :class:`ResidualQuantizer` → MLP decoder.

Codebook update: **straight-through estimator + codebook loss** (no EMA). For the residual ``r_k`` entering level
``k`` and its nearest codeword ``e_k``, the quantisation loss is ``‖sg[r_k] − e_k‖² + β_c‖r_k − sg[e_k]‖²`` (the
first term moves the codebook, the second — the commitment term, weight β_c, default 0.25 — moves the encoder);
the decoder sees ``z + sg[ẑ − z]`` so reconstruction gradients pass straight through to the encoder. β_c is *not*
the paper's beam size β. Codewords that no training vector chose during an epoch are re-seeded with randomly drawn
residuals (codebook expiry, :meth:`ResidualQuantizer.reset_dead_codes`) so that the codebooks do not collapse.

Every codebook can be initialised from k-means (faiss) run on that level's residuals; the codebook rows are then
exactly the ``[C, d]`` centroids, one centroid per row.

Reference: Rajput et al., "Recommender Systems with Generative Retrieval" (TIGER), NeurIPS 2023;
Zeghidour et al., "SoundStream" (residual vector quantisation).
"""

from logging import getLogger
from typing import NamedTuple, Sequence

import faiss
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

KMEANS_ITERS = 20  # Lloyd iterations per k-means run


def kmeans(x: torch.Tensor, k: int, seed: int = 0, niter: int = KMEANS_ITERS) -> torch.Tensor:
    """Lloyd k-means with faiss.

    Args:
        x: points ``[N, d]``.
        k: number of centroids.
        seed: faiss random seed (results are deterministic for a given seed).
        niter: Lloyd iterations.

    Returns:
        torch.Tensor: centroids ``[k, d]`` (row ``j`` is centroid ``j``), on ``x``'s device. With fewer than ``k``
        points every point becomes a centroid and the remaining rows repeat points (such codes stay unused).
    """
    points = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)  # [N, d]
    n, d = points.shape
    if n < k:
        getLogger().warning(f"[TOKENIZER] k-means on {n} points for {k} centroids: repeating points as centroids")
        rng = np.random.default_rng(seed)
        fill = points[rng.integers(0, n, size=k - n)]
        centroids = np.concatenate([points, fill], axis=0)  # [k, d]
    else:
        km = faiss.Kmeans(d, k, niter=niter, seed=seed, verbose=False)
        km.cp.min_points_per_centroid = 1  # small item sets are expected; silence faiss' size warning
        km.train(points)
        centroids = km.centroids  # [k, d]
    return torch.from_numpy(np.array(centroids, dtype=np.float32)).to(x.device)


def nearest_code(x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Index of the nearest codeword (squared L2) for each row: ``[N, d], [C, d] -> [N]``."""
    dist = (
        x.pow(2).sum(1, keepdim=True) - 2 * x @ codebook.t() + codebook.pow(2).sum(1).unsqueeze(0)
    )  # [N, C]
    return dist.argmin(dim=1)


class ResidualQuantizer(nn.Module):
    """``L`` residual codebooks ``[L, C, d]``; greedy nearest-codeword search level by level.

    Args:
        dim: d, size of the vectors being quantised.
        num_levels: L, number of codebooks.
        codebook_size: C, codewords per codebook.
        commitment_weight: β_c, weight of the commitment term.
    """

    def __init__(self, dim: int, num_levels: int, codebook_size: int, commitment_weight: float = 0.25):
        super().__init__()
        self.dim = dim
        self.num_levels = num_levels
        self.codebook_size = codebook_size
        self.commitment_weight = commitment_weight
        bound = 1.0 / codebook_size
        self.codebooks = nn.Parameter(torch.empty(num_levels, codebook_size, dim).uniform_(-bound, bound))

    @torch.no_grad()
    def kmeans_init(self, x: torch.Tensor, seed: int = 0) -> None:
        """Set codebook ``k`` to the k-means centroids of the level-``k`` residuals of ``x`` ``[N, d]``."""
        residual = x.detach()  # [N, d]
        for level in range(self.num_levels):
            centroids = kmeans(residual, self.codebook_size, seed=seed + level)  # [C, d]
            self.codebooks[level].copy_(centroids.to(self.codebooks.device))
            residual = residual - centroids[nearest_code(residual, centroids)]

    def forward(self, x: torch.Tensor):
        """Quantise ``x`` and compute the codebook + commitment loss.

        Args:
            x: vectors ``[N, d]``.

        Returns:
            tuple: ``(codes [N, L] long, x_q [N, d] sum of the chosen codewords, quant_loss scalar)``.
        """
        residual = x
        x_q = torch.zeros_like(x)  # [N, d]
        quant_loss = x.new_zeros(())
        codes = []
        for level in range(self.num_levels):
            codebook = self.codebooks[level]  # [C, d]
            idx = nearest_code(residual.detach(), codebook)  # [N]
            e = codebook[idx]  # [N, d]
            quant_loss = quant_loss + F.mse_loss(e, residual.detach())
            quant_loss = quant_loss + self.commitment_weight * F.mse_loss(residual, e.detach())
            x_q = x_q + e
            residual = residual - e.detach()
            codes.append(idx)
        return torch.stack(codes, dim=1), x_q, quant_loss

    @torch.no_grad()
    def reset_dead_codes(self, x: torch.Tensor, dead: torch.Tensor, generator: torch.Generator) -> int:
        """Re-seed unused codewords with residuals of randomly drawn rows of ``x`` (codebook expiry).

        Args:
            x: training vectors ``[N, d]``.
            dead: ``[L, C]`` bool, codewords no training vector chose in the last epoch.
            generator: CPU generator drawing the rows.

        Returns:
            int: number of codewords re-seeded.
        """
        residual = x.detach()
        for level in range(self.num_levels):
            n_dead = int(dead[level].sum())
            if n_dead:
                rows = torch.randint(len(x), (n_dead,), generator=generator).to(x.device)
                self.codebooks[level][dead[level].to(self.codebooks.device)] = residual[rows]
            residual = residual - self.codebooks[level][nearest_code(residual, self.codebooks[level])]
        return int(dead.sum())

    @torch.no_grad()
    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """Codes of ``x``: ``[N, d] -> [N, L]`` long."""
        residual = x
        codes = []
        for level in range(self.num_levels):
            idx = nearest_code(residual, self.codebooks[level])  # [N]
            residual = residual - self.codebooks[level][idx]
            codes.append(idx)
        return torch.stack(codes, dim=1)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """Sum of codewords: ``[N, L] -> [N, d]``."""
        levels = torch.arange(self.num_levels, device=codes.device)  # [L]
        return self.codebooks[levels, codes].sum(dim=1)  # [N, L, d] -> [N, d]


def mlp(sizes: Sequence[int]) -> nn.Sequential:
    """Linear layers of the given sizes with ReLU between them (none after the last)."""
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class RQVAEOutput(NamedTuple):
    loss: torch.Tensor  # recon_loss + quant_loss
    recon_loss: torch.Tensor  # MSE(x̂, x) on standardised inputs
    quant_loss: torch.Tensor  # Σ_k codebook + β_c commitment
    codes: torch.Tensor  # [N, L]


class RQVAE(nn.Module):
    """Residual-quantised VAE over item text embeddings.

    Inputs are standardised with one mean vector and one scalar scale (:meth:`fit_normalization`, an isotropic map
    that keeps the embedding geometry), so the reconstruction loss is a relative MSE (1.0 = predicting the mean) on
    the same footing as the latent quantisation loss whatever the scale of the text encoder.

    Args:
        input_dim: size of the text embeddings.
        hidden_sizes: encoder hidden sizes, e.g. ``[512, 256, 128]``; the decoder mirrors them.
        latent_dim: size of the quantised latent.
        num_levels: L, residual codebooks.
        codebook_size: C, codewords per codebook.
        commitment_weight: β_c (0.25 in TIGER).
    """

    def __init__(
        self,
        input_dim: int,
        hidden_sizes: Sequence[int] = (512, 256, 128),
        latent_dim: int = 32,
        num_levels: int = 3,
        codebook_size: int = 256,
        commitment_weight: float = 0.25,
    ):
        super().__init__()
        sizes = [input_dim, *hidden_sizes, latent_dim]
        self.register_buffer("input_mean", torch.zeros(input_dim))  # [D]
        self.register_buffer("input_scale", torch.ones(()))  # sqrt of the mean per-dimension variance
        self.encoder = mlp(sizes)
        self.quantizer = ResidualQuantizer(latent_dim, num_levels, codebook_size, commitment_weight)
        self.decoder = mlp(sizes[::-1])

    @torch.no_grad()
    def fit_normalization(self, x: torch.Tensor) -> None:
        """Set the input mean ``[D]`` and scalar scale from the training embeddings ``x`` ``[N, D]``."""
        mean = x.mean(dim=0)
        self.input_mean.copy_(mean)
        self.input_scale.copy_((x - mean).pow(2).mean().sqrt().clamp_min(1e-12))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.input_mean) / self.input_scale

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, input_dim] -> [N, latent_dim]``."""
        return self.encoder(self.normalize(x))

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """Codes of latents: ``[N, latent_dim] -> [N, L]`` long."""
        return self.quantizer.quantize(z)

    def decode(self, z_q: torch.Tensor) -> torch.Tensor:
        """``[N, latent_dim] -> [N, input_dim]``, in the units of the input embeddings."""
        return self.decoder(z_q) * self.input_scale + self.input_mean

    def item_codes(self, x: torch.Tensor) -> torch.Tensor:
        """Codes of embeddings: ``[N, input_dim] -> [N, L]`` long."""
        with torch.no_grad():
            return self.quantize(self.encode(x))

    @torch.no_grad()
    def kmeans_init(self, x: torch.Tensor, seed: int = 0) -> None:
        """Initialise every codebook from k-means of its residuals of ``encode(x)``."""
        self.quantizer.kmeans_init(self.encode(x), seed=seed)

    def forward(self, x: torch.Tensor) -> RQVAEOutput:
        """Reconstruction + quantisation losses of a batch ``[N, input_dim]``, and its codes."""
        z = self.encode(x)  # [N, d]
        codes, z_q, quant_loss = self.quantizer(z)
        z_st = z + (z_q - z).detach()  # straight-through estimator
        recon_loss = F.mse_loss(self.decoder(z_st), self.normalize(x))
        return RQVAEOutput(recon_loss + quant_loss, recon_loss, quant_loss, codes)

    @torch.no_grad()
    def reconstruction_error(self, x: torch.Tensor) -> float:
        """Relative MSE of ``decode(lookup(quantize(encode(x))))`` (standardised units, 1.0 = the mean)."""
        z_q = self.quantizer.lookup(self.item_codes(x))
        return F.mse_loss(self.decoder(z_q), self.normalize(x)).item()
