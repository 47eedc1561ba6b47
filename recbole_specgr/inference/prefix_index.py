"""
recbole_specgr.inference.prefix_index
#####################################
Dense per-depth prefix tables over the semantic IDs of a fixed item set, built once on the device.

They replace the trie callbacks of HF / fairseq constrained decoding: "which codes may follow this prefix" is one
tensor lookup for all users and beams at once.

Node ids: depth 0 has one node (the empty prefix); depth j ∈ [1, l) numbers the distinct j-digit prefixes in
lexicographic order; at depth l the node id *is* the RecBole item id, so a complete path spells its item.
``child_table(j)`` is a ``[P_j, C]`` table: the depth-(j+1) node reached by appending a code, −1 if no item has that
prefix. With C = 256 and n items the tables hold at most (l−1)·n·C + C int32 entries.
"""

import math
from typing import List

import torch
import torch.nn as nn

ITEMS_UNDER_CHUNK = 1 << 21  # [users, M] entries per chunk of PrefixIndex.items_under


class PrefixIndex(nn.Module):
    """Prefix tables of ``item2codes``; buffers follow the module to its device (derived, so not saved).

    Args:
        item2codes: [n, l] codes per item, each in [0, C); row 0 (padding item) = −1. Full codes must be unique.
        codebook_size: C.
    """

    def __init__(self, item2codes: torch.Tensor, codebook_size: int):
        super().__init__()
        if item2codes.dim() != 2 or item2codes.shape[0] < 2:
            raise ValueError(f"item2codes: expected [n >= 2, l], got shape {tuple(item2codes.shape)}")
        n, l = item2codes.shape
        C = codebook_size
        codes = item2codes[1:].long()  # [n-1, l], real items only
        if codes.min() < 0 or codes.max() >= C:
            raise ValueError(f"item2codes: rows 1.. must hold codes in [0, {C}), got [{codes.min()}, {codes.max()}]")
        if l * math.log2(max(C, 2)) > 62:
            raise ValueError(f"item2codes: {l} digits of codebook size {C} do not fit one int64 prefix key")
        self.n_digits, self.codebook_size, self.n_items = l, C, n

        item_ids = torch.arange(1, n, device=codes.device)
        key = torch.zeros(n - 1, dtype=torch.long, device=codes.device)  # mixed-radix key of the running prefix
        parent = torch.zeros(n - 1, dtype=torch.long, device=codes.device)  # depth-0 node of every item: the root
        n_parents = 1
        for j in range(1, l + 1):
            key = key * C + codes[:, j - 1]
            uniq, node = torch.unique(key, return_inverse=True)  # node: depth-j node id of each item's j-prefix
            if j == l:
                if uniq.numel() != n - 1:
                    raise ValueError(f"item2codes: {n - 1 - uniq.numel()} items share their full code with another")
                node = item_ids  # leaves are item ids
            children = torch.full((n_parents, C), -1, dtype=torch.int32, device=codes.device)
            children[parent, codes[:, j - 1]] = node.int()
            self.register_buffer(f"children_{j - 1}", children, persistent=False)  # [P_{j-1}, C]
            self.register_buffer(f"keys_{j}", uniq, persistent=False)  # [P_j] sorted prefix keys
            pad = torch.full((1,), -1, dtype=torch.long, device=codes.device)
            self.register_buffer(f"item_nodes_{j}", torch.cat([pad, node]), persistent=False)  # [n]
            if j < l:  # the items under each node, grouped by node (ascending ids within a node): CSR
                by_node = torch.argsort(node, stable=True)
                counts = torch.bincount(node, minlength=uniq.numel())
                self.register_buffer(f"node_items_{j}", item_ids[by_node], persistent=False)  # [n-1]
                self.register_buffer(f"node_offsets_{j}", torch.cat([pad.new_zeros(1), counts.cumsum(0)]),
                                     persistent=False)  # [P_j + 1]
            parent, n_parents = node, uniq.numel()
        # at depth l the key table is sorted by key, not by item id: remember which item each key spells
        order = torch.argsort(key)
        self.register_buffer("leaf_items", item_ids[order], persistent=False)  # [n-1]

    def child_table(self, depth: int) -> torch.Tensor:
        """[P_depth, C] table of depth-(depth+1) nodes (item ids at depth l−1), −1 where no item continues."""
        return getattr(self, f"children_{depth}")

    def n_nodes(self, depth: int) -> int:
        """P_depth, the number of distinct ``depth``-digit prefixes (depth ∈ [1, l])."""
        return getattr(self, f"keys_{depth}").numel()

    def item_nodes(self, depth: int) -> torch.Tensor:
        """[n] node id of every item's ``depth``-digit prefix (depth ∈ [1, l]; the item id at l; −1 for padding)."""
        return getattr(self, f"item_nodes_{depth}")

    def _check_inner_depth(self, depth: int):
        if not 1 <= depth < self.n_digits:
            raise ValueError(f"depth: expected 1..{self.n_digits - 1} (a prefix shorter than a full code), got {depth}")

    def _distinct(self, depth: int, nodes: torch.Tensor) -> torch.Tensor:
        """``nodes`` [B, K] of depth ``depth`` (−1 = none) sorted per row, repeats turned into −1."""
        self._check_inner_depth(depth)
        nodes = nodes.long().sort(dim=1).values
        repeat = torch.zeros_like(nodes, dtype=torch.bool)
        repeat[:, 1:] = nodes[:, 1:] == nodes[:, :-1]
        return nodes.masked_fill(repeat, -1)

    def _runs(self, depth: int, nodes: torch.Tensor):
        """Where each of the distinct ``nodes``' items begin in the CSR list, and how many there are: [B, K] each."""
        offsets = getattr(self, f"node_offsets_{depth}")
        node = nodes.clamp(min=0)
        start = offsets[node]
        return start, (offsets[node + 1] - start).masked_fill(nodes < 0, 0)

    def count_under(self, depth: int, nodes: torch.Tensor) -> torch.Tensor:
        """[B] the number of items under each user's ``nodes`` [B, K] (see :meth:`items_under`)."""
        return self._runs(depth, self._distinct(depth, nodes))[1].sum(dim=1)

    def under_mask(self, depth: int, nodes: torch.Tensor) -> torch.Tensor:
        """``[B, n]`` bool, True at the items under each user's ``nodes`` [B, K] (−1 = none): :meth:`items_under` as a
        whole-catalog mask, the cheaper form when the nodes cover much of the catalog."""
        self._check_inner_depth(depth)
        n_prefixes = self.n_nodes(depth)
        table = torch.zeros(nodes.size(0), n_prefixes + 1, dtype=torch.bool, device=nodes.device)
        table.scatter_(1, nodes.long().masked_fill(nodes < 0, n_prefixes), True)  # spare column for "none"
        mask = table[:, self.item_nodes(depth).clamp(min=0)]  # [B, n]
        mask[:, 0] = False
        return mask

    def items_under(self, depth: int, nodes: torch.Tensor) -> torch.Tensor:
        """The items whose ``depth``-digit prefix is one of each user's ``nodes`` [B, K] (−1 = none, repeats
        ignored), ascending, padding 0 first: ``[B, M]``, M the largest count of any user (e.g. guided re-drafting's
        candidates under the beam prefixes B_j, without touching the rest of the catalog). Built a chunk of users at
        a time (at most ``ITEMS_UNDER_CHUNK`` entries) to bound the temporaries."""
        nodes = self._distinct(depth, nodes)
        start, count = self._runs(depth, nodes)  # [B, K]
        items = getattr(self, f"node_items_{depth}")
        width = int(count.sum(dim=1).max()) if count.numel() else 0
        out = torch.zeros(nodes.size(0), width, dtype=torch.long, device=nodes.device)
        if width == 0:
            return out
        step = max(1, ITEMS_UNDER_CHUNK // width)
        slot = torch.arange(width, device=nodes.device)
        for first in range(0, nodes.size(0), step):
            rows = slice(first, first + step)
            ends = count[rows].cumsum(dim=1)  # [b, K] end of each node's run in the user's list
            at = slot.expand(ends.size(0), width).contiguous()  # [b, M] position in the list
            run = torch.searchsorted(ends, at, right=True).clamp(max=nodes.size(1) - 1)  # [b, M] its node
            pos = start[rows].gather(1, run) + at - (ends - count[rows]).gather(1, run)
            chunk = items[pos.clamp(max=items.numel() - 1)].masked_fill(at >= ends[:, -1:], 0)
            out[rows] = chunk.sort(dim=1).values
        return out

    def restrict(self, item_mask: torch.Tensor) -> List[torch.Tensor]:
        """Tables that lead only to items with ``item_mask`` [n] True: l tensors [P_j, C], as :meth:`child_table`."""
        if item_mask.shape != (self.n_items,) or item_mask.dtype != torch.bool:
            raise ValueError(f"item_mask: expected a bool tensor of shape [{self.n_items}], got {item_mask.dtype} "
                             f"{tuple(item_mask.shape)}")
        allowed = item_mask.clone()
        allowed[0] = False
        tables: List[torch.Tensor] = [None] * self.n_digits
        for j in range(self.n_digits - 1, -1, -1):  # from the leaves up: a node is allowed iff a child is
            child = self.child_table(j)
            ok = (child >= 0) & allowed[child.clamp(min=0)]  # [P_j, C]
            tables[j] = child.masked_fill(~ok, -1)
            allowed = ok.any(dim=1)  # [P_j]
        return tables

    def alive_nodes(self, item_mask: torch.Tensor) -> List[torch.Tensor]:
        """Per-user liveness of every node: l tensors [B, P_j] (j = 1 … l; item ids at depth l), True where some item
        with ``item_mask`` [B, n] True has that prefix. Used with shared tables to exclude items per user (history)."""
        if item_mask.dim() != 2 or item_mask.shape[1] != self.n_items or item_mask.dtype != torch.bool:
            raise ValueError(f"item_mask: expected a bool tensor of shape [B, {self.n_items}], got {item_mask.dtype} "
                             f"{tuple(item_mask.shape)}")
        items = item_mask[:, 1:].float()  # [B, n-1] real items
        alive = []
        for j in range(1, self.n_digits):
            counts = items.new_zeros(item_mask.shape[0], self.n_nodes(j))
            alive.append(counts.index_add_(1, self.item_nodes(j)[1:], items) > 0)  # [B, P_j]
        leaves = item_mask.clone()
        leaves[:, 0] = False
        return alive + [leaves]

    def lookup(self, prefixes: torch.Tensor) -> torch.Tensor:
        """Node ids of j-digit prefixes: [..., j] codes -> [...] (item ids when j == l), −1 if no item has the prefix.

        Codes outside [0, C) (e.g. −1 for an invalid beam) give −1.
        """
        j = prefixes.shape[-1]
        if not 1 <= j <= self.n_digits:
            raise ValueError(f"prefixes: expected 1..{self.n_digits} digits in the last dim, got {j}")
        C = self.codebook_size
        codes = prefixes.long()
        in_range = ((codes >= 0) & (codes < C)).all(dim=-1)
        key = torch.zeros(codes.shape[:-1], dtype=torch.long, device=codes.device)
        for i in range(j):
            key = key * C + codes[..., i].clamp(0, C - 1)
        keys = getattr(self, f"keys_{j}")
        pos = torch.searchsorted(keys, key).clamp(max=keys.numel() - 1)
        found = in_range & (keys[pos] == key)
        node = self.leaf_items[pos] if j == self.n_digits else pos
        return torch.where(found, node, torch.full_like(node, -1))
