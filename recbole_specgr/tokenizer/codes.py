"""
recbole_specgr.tokenizer.codes
##############################
Pure helpers on code tables: collision (identification) digit numbering and codebook statistics.
"""

import numpy as np
import torch


def occurrence_rank(rows: np.ndarray) -> np.ndarray:
    """For each row, how many earlier rows are identical: ``[n, L] -> [n]`` (0 for a first occurrence)."""
    n = len(rows)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    _, group = np.unique(rows, axis=0, return_inverse=True)
    group = group.reshape(-1)  # [n]
    order = np.argsort(group, kind="stable")  # rows grouped, original order kept inside a group
    sorted_group = group[order]
    starts = np.flatnonzero(np.r_[True, sorted_group[1:] != sorted_group[:-1]])
    first = np.repeat(starts, np.diff(np.r_[starts, n]))  # [n] start of each sorted row's group
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - first
    return rank


def collision_digits(prefixes: torch.Tensor, n_existing: int, codebook_size: int) -> torch.Tensor:
    """Collision digits of the rows of ``prefixes`` after the first ``n_existing`` ones, numbered in row order.

    Args:
        prefixes: ``[n, L]`` quantiser codes; the first ``n_existing`` rows already hold digits 0, 1, … per prefix.
        n_existing: rows already numbered.
        codebook_size: C, the digit's range.

    Returns:
        torch.LongTensor: ``[n - n_existing]``, the number of earlier rows with the same prefix.

    Raises:
        ValueError: a prefix would need a digit ≥ C.
    """
    rows = prefixes.cpu().numpy()
    new = occurrence_rank(rows)[n_existing:]
    if len(new) and new.max() >= codebook_size:
        n_full = len(np.unique(rows[n_existing:][new >= codebook_size], axis=0))
        worst = int(np.argmax(new))
        raise ValueError(
            f"{int(new[worst]) + 1} items share the semantic-ID prefix {tuple(rows[n_existing + worst].tolist())} "
            f"({n_full} prefix(es) over-full), but the collision digit holds only "
            f"rqvae_codebook_size={codebook_size} values: increase rqvae_codebook_size or rqvae_num_levels"
        )
    return torch.from_numpy(new)


def code_stats(codes: torch.Tensor, codebook_size: int) -> dict:
    """Codebook usage and perplexity per level, collision share and the most items sharing one prefix.

    Args:
        codes: ``[n, L + 1]`` codes of real items (no padding row), the last column being the collision digit.
        codebook_size: C.

    Returns:
        dict: ``codebook_usage_<k>`` (share of the C codes used at level k), ``perplexity_<k>`` (exp of the entropy
        of level k's code distribution), ``collision_share`` (items with digit > 0), ``max_collisions``.
    """
    stats = {}
    num_levels = codes.shape[1] - 1
    for level in range(num_levels):
        counts = torch.bincount(codes[:, level], minlength=codebook_size).double()  # [C]
        p = counts[counts > 0] / counts.sum()
        stats[f"codebook_usage_{level + 1}"] = float((counts > 0).double().mean())
        stats[f"perplexity_{level + 1}"] = float((-(p * p.log()).sum()).exp())
    digit = codes[:, num_levels]
    stats["collision_share"] = float((digit > 0).double().mean())
    stats["max_collisions"] = int(digit.max()) + 1
    return stats
