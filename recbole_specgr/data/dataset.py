"""
recbole_specgr.data.dataset
###########################
:class:`InductiveSequentialDataset`: a chronological split in which valid/test targets may be items never seen in
training, with item texts and their embeddings for inductive models.

Reference:
    Yijie Ding et al. "Inductive Generative Recommendation via Retrieval-based Speculation." arXiv 2410.02939.
"""

import json
import os
import re

import numpy as np
import pandas as pd
import psutil
import torch

from recbole.data.dataset import SequentialDataset
from recbole.data.interaction import Interaction
from recbole.utils import FeatureSource, FeatureType

from recbole_specgr.cli import error_message
from recbole_specgr.compat import field_names
from recbole_specgr.data.text_embedding import DEFAULT_ENCODER, load_or_encode

SPLIT_NAMES = ("train", "valid", "test")
INTER_INDEX_FIELD = "inter_index"  # per row: position of its target in the user-chronological interaction list
# (all interactions, those the cold-start rule drops included)


HISTORY_BYTES_PER_CELL = 33  # data_augmentation's [R, L] arrays at once: int64 positions, bool mask, int64 ids ×2, copy


# cgroup files holding (limit, usage) of a container's memory: v2, then v1 (a limit of ~2**63 means none)
CGROUP_MEMORY_FILES = (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                       ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"))


def available_memory() -> int:
    """Bytes this process can still allocate: the host's available memory, or less where a container's cgroup limit
    leaves less (psutil sees the host only)."""
    available = psutil.virtual_memory().available
    for limit_file, usage_file in CGROUP_MEMORY_FILES:
        try:
            with open(limit_file) as f_limit, open(usage_file) as f_usage:
                limit, usage = f_limit.read().strip(), f_usage.read().strip()
        except OSError:
            continue
        if limit.isdigit() and usage.isdigit():
            return min(available, max(int(limit) - int(usage), 0))
    return available


def _run_starts(uid: np.ndarray) -> np.ndarray:
    """For ids sorted into runs (e.g. users), the position where each entry's run starts: ``[n]``."""
    position = np.arange(len(uid))
    return np.maximum.accumulate(np.where(np.r_[True, uid[1:] != uid[:-1]], position, 0))


class InductiveSequentialDataset(SequentialDataset):
    r"""Sequential dataset split by time, with a cold-start item protocol and item text embeddings.

    Every interaction after a user's first one becomes a row ``(previous items, target)``; the row belongs to the
    split of its *target's* timestamp ``t``: train if ``t < t_valid``, valid if ``t_valid <= t < t_test``, test
    otherwise. Histories reach back into any earlier period (at most ``MAX_ITEM_LIST_LENGTH`` items), so training rows
    are exactly the prefixes inside the training period. With ``t_valid = 3`` and ``t_test = 5``::

        u1: i1@1 i2@2 i3@4 i4@6   ->   train  u1, <i1> | i2
                                        valid  u1, <i1, i2> | i3
                                        test   u1, <i1, i2, i3> | i4

    Cut-offs come from ``split_timestamps: [t_valid, t_test]`` (absolute, in the units of the time field),
    ``split_timestamps: file`` (read from ``<dataset>.split.json`` next to the atomic files), or else the global
    ``split_time_quantiles`` (default ``[0.8, 0.9]``) of all interaction times.

    Cold-start protocol (``cold_start_items: "<pandas query on item fields>"``, e.g. ``release_year >= 1997``): the
    interactions of matching items inside the training period are dropped, so those items appear neither as training
    targets nor in training histories; their valid/test-period interactions stay, as targets and in histories.

    Seen items are the items of the interactions kept inside the training period — a user's first one included,
    though it is no row's target and, when the user's next interaction comes later, in no training row: the paper's
    in-sample items (those of its train split). Every other item is unseen. (On ml-100k and ML-1M every such item is
    also in a training row.)

    Attributes:
        seen_item_mask (torch.BoolTensor): ``[item_num]``, True for seen items (padding id 0 is False).
        item_texts (list[str]): the text of every item (``text_fields`` joined), ``""`` for padding.
        item_text_emb (torch.FloatTensor): ``[item_num, d]`` sentence embeddings of ``item_texts`` (row 0 zeros),
            computed on first use and cached on disk under ``cache_dir``.
        split_timestamps (tuple[float, float]): the cut-offs in use.
    """

    def __init__(self, config):
        # load parameters info (before super().__init__: the base constructor fires the hooks below)
        self.split_timestamps_arg = config["split_timestamps"]
        quantiles = config["split_time_quantiles"]
        self.split_time_quantiles = [0.8, 0.9] if quantiles is None else quantiles  # [] is refused, not defaulted
        self.cold_start_rule = config["cold_start_items"]
        fields = config["text_fields"] or []
        if not isinstance(fields, (str, list, tuple)) or not all(isinstance(f, str) for f in
                                                                  ([fields] if isinstance(fields, str) else fields)):
            raise ValueError(f"text_fields: expected a field name or a list of .item field names, got {fields!r}")
        self.text_fields = [fields] if isinstance(fields, str) else list(fields)  # one name: that field alone
        self.text_encoder = config["text_encoder"] or DEFAULT_ENCODER
        self.text_batch_size = config["text_batch_size"] or 64
        self.cache_dir = config["cache_dir"] or "cache"
        self._shared = {}  # item-side tensors shared by the split copies made in build()
        super().__init__(config)
        self._change_feat_format()  # DataFrames -> Interactions, then data_augmentation() builds and labels the rows
        self._shared["seen_item_mask"] = self._compute_seen_item_mask()
        self._shared["item_texts"] = self._compute_item_texts() if self.text_fields else None

    # ---------------------------------------------------------------- hooks fired by RecBole's Dataset.__init__
    def _filter_inter_by_user_or_item(self):
        """RecBole's drop of interactions whose user or item has no row in the ``.user`` / ``.item`` file
        (``filter_inter_by_user_or_item``), with a warning that counts them (it was silent)."""
        before = len(self.inter_feat)
        super()._filter_inter_by_user_or_item()
        dropped = before - len(self.inter_feat)
        if before and dropped == before:  # RecBole failed later: "Some feat is empty, please check the filtering …"
            files = [f"{self.dataset_name}.{suffix}" for suffix, feat in (("user", self.user_feat),
                                                                         ("item", self.item_feat)) if feat is not None]
            raise ValueError(f"{os.path.join(self.dataset_path, self.dataset_name + '.inter')}: none of its {before} "
                             f"interactions names ids that have rows in {' and '.join(files)} "
                             f"(filter_inter_by_user_or_item); check that the ids are written alike in both")
        if dropped:
            self.logger.warning(f"[DATA] dropped {dropped} of {before} interactions of '{self.dataset_name}' whose "
                                f"user or item has no row in its .user / .item file (filter_inter_by_user_or_item)")

    def _load_feat(self, filepath, source):
        """RecBole's loading, except that the ``.inter`` file must give every row a user, an item and a finite time
        (the split is by time; an empty timestamp was filled with the column's mean), and an item with two rows in
        the ``.item`` file is an error (RecBole kept the first row without a word, so which text the item gets
        depended on the row order)."""
        feat = super()._load_feat(filepath, source)
        if source == FeatureSource.INTERACTION:
            self._check_inter_fields(filepath, feat)
            feat = self._drop_repeated_rows(filepath, feat)
        if feat is not None and source == FeatureSource.ITEM and self.iid_field in feat:
            twice = feat[self.iid_field].duplicated()
            if twice.any():
                raise ValueError(f"{filepath}: item {feat[self.iid_field][twice].iloc[0]!r} has more than one row")
        return feat

    def _drop_repeated_rows(self, filepath, feat):
        """``feat`` without the rows that repeat an earlier row's user, item and time, with a warning that counts
        them: a copied row is a data error (a user takes an item once at a time), and kept, it doubled the evaluation
        rows of its user, whose second copy could never be recommended under ``eval_exclude_history``."""
        repeated = feat.duplicated(subset=[self.uid_field, self.iid_field, self.time_field])
        if repeated.any():
            self.logger.warning(f"[DATA] dropped {int(repeated.sum())} of {len(feat)} rows of {filepath} that repeat "
                                f"an earlier row's {self.uid_field}, {self.iid_field} and {self.time_field}")
            feat = feat[~repeated].reset_index(drop=True)
        return feat

    def _fill_nan(self):
        """RecBole's filling of missing values, after noting which float values of ``text_fields`` are missing:
        RecBole fills them with the column's mean, which an item's text must not show (a missing year read 2005.25)."""
        item = self.item_feat
        self._missing_text_values = {
            field: item[field].isna().to_numpy() for field in self.text_fields
            if item is not None and field in item and self.field2type.get(field) == FeatureType.FLOAT}
        super()._fill_nan()

    def _header_fields(self, filepath):
        """The field names in the header line of an atomic file (``title:token_seq`` → ``title``)."""
        with open(filepath, encoding=self.config["encoding"]) as f:
            return field_names(f.readline(), self.config["field_separator"])

    def _unloaded_item_field(self, field):
        """``"is in '<dataset>.item' but not loaded: add it to load_col.item"`` when ``field`` is in that file's
        header (the fix is load_col, not the file), else None."""
        if field in self._header_fields(os.path.join(self.dataset_path, f"{self.dataset_name}.item")):
            return f"is in '{self.dataset_name}.item' but not loaded: add it to load_col.item"
        return None

    def _check_inter_fields(self, filepath, feat):
        """ValueError naming the file unless ``feat`` has the user, item and time fields, filled and finite."""
        for key in ("USER_ID_FIELD", "ITEM_ID_FIELD", "TIME_FIELD"):
            field = self.config[key]
            if feat is None or field not in feat:
                header = self._header_fields(filepath)
                if field in header:
                    loaded = (self.config["load_col"] or {}).get("inter")
                    why = (f"is dropped by load_col.inter {loaded} (list it there, e.g. in your dataset YAML: "
                           f"load_col: {{inter: [{', '.join(header)}]}}; README, 'Your own data')")
                else:
                    why = "is not in its header"
                raise ValueError(f"{filepath}: field {field!r} ({key}) {why}; header: {header}")
            column = feat[field]
            missing = column.isna() | (~np.isfinite(column) if pd.api.types.is_numeric_dtype(column) else False)
            if missing.any():
                row = int(np.flatnonzero(missing.to_numpy())[0])
                value = column.iloc[row]
                raise ValueError(f"{filepath}: field {field!r} ({key}) is empty or not finite in data row {row + 1} "
                                 f"({'empty' if pd.isna(value) else value})")

    def _data_processing(self):
        self._cold_item_tokens = self._match_cold_start_items()
        super()._data_processing()

    def _normalize(self):
        # cut-offs are absolute times: keep the raw time column before RecBole may min-max normalise it
        self._raw_time = self.inter_feat[self.time_field].to_numpy(dtype=np.float64).copy()
        super()._normalize()

    def data_augmentation(self):
        """Build all ``(history, target)`` rows at once (vectorised) and label each with its split."""
        self._check_field("uid_field", "time_field")
        max_len = self.max_item_list_len
        uid = self.inter_feat[self.uid_field].numpy()
        order = np.lexsort((self._raw_time, uid))  # by user, then time (stable)
        uid, iid, times = uid[order], self.inter_feat[self.iid_field].numpy()[order], self._raw_time[order]
        t_valid, t_test = self._resolve_cutoffs(times)
        period = np.searchsorted(np.array([t_valid, t_test]), times, side="right")  # 0 train, 1 valid, 2 test

        cold = np.zeros(self.item_num, dtype=bool)
        cold_ids = [self.field2token_id[self.iid_field][t] for t in self._cold_item_tokens
                    if t in self.field2token_id[self.iid_field]]
        cold[cold_ids] = True
        keep = ~(cold[iid] & (period == 0))
        # every user's items in time order, the dropped cold-start interactions included: the user did interact with
        # those items, so eval_exclude_history excludes them too (history_mask)
        user_items, user_start_all, kept_position = iid, _run_starts(uid), np.nonzero(keep)[0]
        had_training_period = bool((period == 0).any())
        order, uid, iid, period = order[keep], uid[keep], iid[keep], period[keep]
        self._train_period_items = np.unique(iid[period == 0])  # the seen items (seen_item_mask)

        n = len(uid)
        position = np.arange(n)
        user_start = _run_starts(uid)
        rows = np.nonzero(position > user_start)[0]  # every interaction with at least one earlier item
        longest = int((rows - user_start[rows]).max()) if len(rows) else 0  # the longest history, uncut
        self._check_history_memory(len(rows), max_len, longest)
        hist_start = np.maximum(user_start[rows], rows - max_len)
        length = rows - hist_start  # [R]
        idx = hist_start[:, None] + np.arange(max_len)[None, :]  # [R, L]
        in_hist = np.arange(max_len)[None, :] < length[:, None]
        item_list = np.where(in_hist, iid[np.minimum(idx, max(n - 1, 0))], 0)

        self.item_id_list_field = self.iid_field + self.config["LIST_SUFFIX"]
        self.set_field_property(self.item_id_list_field, FeatureType.TOKEN_SEQ, FeatureSource.INTERACTION, max_len)
        self.set_field_property(self.item_list_length_field, FeatureType.TOKEN, FeatureSource.INTERACTION, 1)
        self.set_field_property(INTER_INDEX_FIELD, FeatureType.TOKEN, FeatureSource.INTERACTION, 1)
        new_inter = self.inter_feat[torch.from_numpy(order[rows])]
        new_inter.update(
            Interaction(
                {
                    self.item_id_list_field: torch.from_numpy(item_list.astype(np.int64)),
                    self.item_list_length_field: torch.from_numpy(length.astype(np.int64)),
                    INTER_INDEX_FIELD: torch.from_numpy(kept_position[rows].astype(np.int64)),
                }
            )
        )
        self._shared["user_items"] = torch.from_numpy(user_items.astype(np.int64))  # [n_inter], before the drop
        self._shared["user_start"] = torch.from_numpy(user_start_all.astype(np.int64))  # [n_inter]
        self.inter_feat = new_inter
        self.row_split = period[rows]
        self.split_timestamps = (t_valid, t_test)
        counts = np.bincount(self.row_split, minlength=3)
        for name, count in zip(SPLIT_NAMES, counts):
            if count == 0 and name == "train" and had_training_period and not (period == 0).any():
                n_real = self.item_num - 1  # id 0 is padding
                raise ValueError(
                    f"cold_start_items: {self.cold_start_rule!r} matched {int(cold.sum())} of the {n_real} items of "
                    f"'{self.dataset_name}', whose training-period interactions are dropped, and that left the train "
                    "split empty; expected a rule that keeps some items seen in training"
                )
            if count == 0:
                raise ValueError(
                    f"split_timestamps {list(self.split_timestamps)}: the {name} split of '{self.dataset_name}' is "
                    "empty; choose cut-offs inside the data's time range"
                )
        self.logger.info(
            f"[SPLIT] cut-offs {self.split_timestamps}: train/valid/test rows {counts.tolist()}, "
            f"{int(cold.sum())} cold-start items"
        )

    def _check_history_memory(self, n_rows, max_len, longest):
        """ValueError unless the ``[rows, MAX_ITEM_LIST_LENGTH]`` history arrays fit in the memory available (a
        setting such as 1e8 was killed for memory, or swapped for minutes, instead of failing in a line)."""
        need = n_rows * max_len * HISTORY_BYTES_PER_CELL
        available = available_memory()
        if need > available:
            raise ValueError(
                f"MAX_ITEM_LIST_LENGTH: {max_len} pads each of the {n_rows:,} histories of '{self.dataset_name}' to "
                f"{max_len} items, ~{need / 2**30:,.1f} GiB to build, more than the {available / 2**30:.1f} GiB "
                f"available; the longest history here has {longest} items (a longer setting only adds padding); "
                f"expected at most {min(longest, available // max(n_rows * HISTORY_BYTES_PER_CELL, 1)):,}"
            )

    def build(self):
        """The train / valid / test datasets, as labelled by :meth:`data_augmentation`."""
        splits = []
        for k in range(len(SPLIT_NAMES)):
            part = self.copy(self.inter_feat[torch.from_numpy(self.row_split == k)])
            part.row_split = np.full(len(part.inter_feat), k)
            splits.append(part)
        return splits

    # ---------------------------------------------------------------- item side
    @property
    def seen_item_mask(self):
        return self._shared["seen_item_mask"]

    @property
    def item_texts(self):
        if self._shared.get("item_texts") is None:
            raise ValueError(f"text_fields: dataset '{self.dataset_name}' has none configured; text models need them "
                             f"(the item fields joined into each item's text, e.g. text_fields: [title, genre] in your "
                             f"dataset YAML; README, 'Your own data')")
        return self._shared["item_texts"]

    @property
    def item_text_emb(self):
        if "item_text_emb" not in self._shared:
            texts = self.item_texts
            emb = load_or_encode(
                texts[1:], self.text_encoder, self.cache_dir, batch_size=self.text_batch_size,
                device=self.config["device"], show_progress=self.config["show_progress"],
            )
            full = np.zeros((len(texts), emb.shape[1]), dtype=np.float32)
            full[1:] = emb  # row i = item id i; row 0 (padding) stays zero
            self._shared["item_text_emb"] = torch.from_numpy(full)
        return self._shared["item_text_emb"]

    def history_mask(self, interaction):
        """``[B, item_num]`` bool: True at every item the row's user interacted with before the row's target, in
        any period and however far back (not only the ``MAX_ITEM_LIST_LENGTH`` items of the model's input), the
        training-period interactions with cold-start items that the split drops from the rows included (MovieLens
        has no repeats: such an item can never be the user's target).

        Used by the trainer's ``eval_exclude_history`` option (datasets without repeat interactions, e.g. MovieLens).
        """
        position = interaction[INTER_INDEX_FIELD].cpu()  # [B]
        start = self._shared["user_start"][position]  # [B]
        counts = position - start  # [B] earlier interactions of the row's user
        rows = torch.repeat_interleave(torch.arange(len(position)), counts)
        offsets = torch.arange(int(counts.sum())) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
        items = self._shared["user_items"][torch.repeat_interleave(start, counts) + offsets]
        mask = torch.zeros(len(position), self.item_num, dtype=torch.bool)
        mask[rows, items] = True
        return mask

    def _compute_seen_item_mask(self):
        seen = torch.zeros(self.item_num, dtype=torch.bool)
        seen[torch.from_numpy(self._train_period_items)] = True
        seen[0] = False
        return seen

    def _compute_item_texts(self):
        if self.item_feat is None:
            raise ValueError(f"text_fields: '{self.dataset_name}.item' was not loaded; add it to load_col.item")
        parts = []
        for field in self.text_fields:
            if field not in self.item_feat:
                where = self._unloaded_item_field(field) or f"is not in '{self.dataset_name}.item'"
                raise ValueError(f"text_fields: field '{field}' {where} (loaded item fields: "
                                 f"{sorted(self.item_feat.columns)})")
            parts.append(self._field_as_text(field))
        texts = [". ".join(v.strip() for v in values if v.strip()) for values in zip(*parts)]  # blank: no text
        texts[0] = ""
        empty = [item for item, text in enumerate(texts) if item and not text]
        if len(empty) == len(texts) - 1:
            raise ValueError(f"text_fields {self.text_fields}: every item of '{self.dataset_name}' has empty text")
        if empty:
            shown = ", ".join(self.id2token(self.iid_field, empty[:5]).tolist()) + (", …" if len(empty) > 5 else "")
            self.logger.warning(f"[TEXT] {len(empty)} items of '{self.dataset_name}' have no text in "
                                f"{self.text_fields} ({shown})")
        return texts

    def _field_as_text(self, field):
        values = self.item_feat[field]
        ftype = self.field2type[field]
        if ftype == FeatureType.TOKEN:
            tokens = self.field2id_token[field][values.numpy()]
            return ["" if t == "[PAD]" else str(t) for t in tokens]
        if ftype == FeatureType.TOKEN_SEQ:
            id2token = self.field2id_token[field]
            # token_seq tokens cannot hold spaces; categories like "Cell_Phones" read better as words
            return [" ".join(str(id2token[i]).replace("_", " ") for i in row if i != 0) for row in values.numpy()]
        if ftype == FeatureType.FLOAT:
            missing = getattr(self, "_missing_text_values", {}).get(field)  # filled with the mean: no text
            return ["" if missing is not None and missing[i] else f"{v:g}"
                    for i, v in enumerate(values.numpy().reshape(len(values), -1)[:, 0])]
        raise ValueError(f"text_fields: field '{field}' has type {ftype.value}; use token, token_seq or float fields")

    # ---------------------------------------------------------------- split helpers
    def _resolve_cutoffs(self, times):
        arg = self.split_timestamps_arg
        if isinstance(arg, str):
            if arg != "file":
                raise ValueError(f"split_timestamps: expected [t_valid, t_test], 'file' or null, got {arg!r}")
            path = os.path.join(self.dataset_path, f"{self.dataset_name}.split.json")
            if not os.path.isfile(path):
                raise ValueError(f"split_timestamps: 'file' needs {path} with {{\"split_timestamps\": [t_valid, t_test]}}")
            expected = '{"split_timestamps": [t_valid, t_test]}'
            with open(path, encoding="utf-8") as f:
                try:
                    saved = json.load(f)
                except (json.JSONDecodeError, UnicodeDecodeError) as err:
                    raise ValueError(f"{path}: not valid JSON ({err}); expected {expected}") from None
            if not isinstance(saved, dict) or saved.get("split_timestamps") is None:
                raise ValueError(f"{path}: expected {expected}, got {json.dumps(saved)[:80]}")
            arg = saved["split_timestamps"]
        if arg is None:
            q = self.split_time_quantiles
            if not _number_pair(q) or not 0 < q[0] < q[1] < 1:
                raise ValueError(f"split_time_quantiles: expected [q_valid, q_test] with 0 < q_valid < q_test < 1, got {q}")
            t_valid, t_test = np.quantile(times, q)
        else:
            if not _number_pair(arg) or not float(arg[0]) < float(arg[1]):
                raise ValueError(f"split_timestamps: expected [t_valid, t_test] with t_valid < t_test, got {arg!r}")
            t_valid, t_test = arg
        return float(t_valid), float(t_test)

    def _match_cold_start_items(self):
        """Raw item tokens matching ``cold_start_items`` (evaluated before ids are remapped)."""
        rule = self.cold_start_rule
        if not rule:
            return set()
        if self.item_feat is None:
            raise ValueError(f"cold_start_items: needs the item file '{self.dataset_name}.item' (load_col.item)")
        frame = self.item_feat.copy()
        for column in frame.columns:
            if not pd.api.types.is_numeric_dtype(frame[column]) and not isinstance(frame[column].iloc[0], np.ndarray):
                # a mostly numeric text column (e.g. ml-100k's release_year token, with a few dirty values) is
                # compared as numbers; its unparsable values become NaN and match no numeric condition
                numeric = pd.to_numeric(frame[column], errors="coerce")
                if numeric.notna().sum() >= 0.9 * frame[column].notna().sum():
                    frame[column] = numeric
        try:
            matched = frame.query(rule, engine="python")
        except Exception as err:  # pandas raises many kinds for a bad expression
            undefined = re.fullmatch(r"name '(\w+)' is not defined", error_message(err))  # pandas' UndefinedVariable
            unloaded = self._unloaded_item_field(undefined[1]) if undefined else None
            hint = f"; {undefined[1]} {unloaded}" if unloaded else ""
            raise ValueError(f"cold_start_items: cannot evaluate {rule!r} on the item fields {list(frame.columns)} "
                             f"({error_message(err)}){hint}") from None
        if matched.empty:  # a rule that holds nothing out is a mistake as often as not ("genre == 'drama'" on a list)
            self.logger.warning(f"[SPLIT] cold_start_items {rule!r} matches no item of '{self.dataset_name}': no item "
                                f"is held out of training")
        return set(matched[self.iid_field].astype(str))


def _number_pair(value) -> bool:
    """A list or tuple of two numbers (not bools)."""
    return isinstance(value, (list, tuple)) and len(value) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
