"""
recbole_specgr.compat
#####################
The one place where recbole 1.2.1 is made to run on today's stack (numpy 1.26 / 2.x, pandas 2.2 / 3.x, torch ≥ 2.6).
Import this module before anything from recbole; every other module of the package does.

What breaks and what is done about it:

- numpy 2 removed ``np.float_``, ``np.complex_``, ``np.unicode_`` and ``np.bool8``. RecBole's
  ``Config.compatibility_settings`` reads the first three (``np.float = np.float_``) and its metrics/interaction code
  uses the legacy aliases it sets up. We restore the removed names as aliases of their numpy 2 spellings, so that
  RecBole's own settings run unchanged.
- pandas 3 (copy-on-write) silently ignores ``df[col].fillna(..., inplace=True)``, which RecBole uses when loading
  atomic files and filling missing values, and ``Series.agg(len)`` returns the Series' length instead of each
  element's, which breaks the id remapping of ``token_seq`` fields. :class:`PandasCompatDatasetMixin` re-implements
  those three steps (``_load_feat``, ``_fill_nan``, ``_remap``) with pandas-2/3-safe calls, and
  :func:`patch_recbole_datasets` puts them on RecBole's own ``Dataset`` (and fixes ``SequentialDataset``'s
  ``benchmark_filename`` presets), so every dataset class, RecBole's and ours, loads the same way (see that block).
- torch ≥ 2.6 loads with ``weights_only=True``; RecBole's checkpoints hold the pickled ``Config``. This package's
  trainers save the configuration as plain data instead (:func:`recbole_specgr.config.plain_config`), and
  :func:`load_checkpoint` loads with ``weights_only=True``, refusing any file that holds pickled objects.
- ``recbole/model/sequential_recommender/sine.py`` switches on ``torch.autograd.set_detect_anomaly(True)`` for the
  whole process when it is imported (any core sequential model imports it), which makes every backward pass several
  times slower. We import the package once here and switch anomaly detection back off.
- Two warnings that RecBole's own code raises on every run (``torch.cuda.amp.GradScaler`` deprecation, non-writable
  numpy arrays) are filtered by message and module, so a normal log has no Python warning lines.
- ``recbole.quick_start`` imports ray (broken on numpy 2, no wheel for Python ≥ 3.12): this package never imports it
  and ships its own quick start.
"""

import csv
import importlib.util
import locale
import os
import pickle
import warnings
import zipfile

import numpy as np
import pandas as pd
import torch

from recbole_specgr.cli import error_message

if importlib.util.find_spec("recbole") is None:
    raise ImportError("recbole is not installed: run `pip install --no-deps recbole==1.2.1` (without --no-deps its "
                      "ray<=2.6.3 pin fails on Python >= 3.12; nothing here needs ray)")

_NUMPY_REMOVED_ALIASES = {
    "float_": np.float64,
    "complex_": np.complex128,
    "unicode_": np.str_,
    "bool8": np.bool_,
}
for _name, _alias in _NUMPY_REMOVED_ALIASES.items():
    if _name not in np.__dict__:
        setattr(np, _name, _alias)

# RecBole also uses these legacy names outside Config (metrics.py, interaction.py); Config sets them again.
for _name, _alias in {"float": np.float64, "int": np.int_, "bool": np.bool_}.items():
    if _name not in np.__dict__:
        setattr(np, _name, _alias)

from recbole.utils import FeatureSource, FeatureType  # noqa: E402  (after the aliases above)
import recbole.model.sequential_recommender  # noqa: E402,F401  (imports sine.py, which enables anomaly detection)

torch.autograd.set_detect_anomaly(False)

# Third-party noise on every normal run, filtered by message and origin (never a blanket ignore): RecBole's Trainer
# builds ``torch.cuda.amp.GradScaler`` (deprecated by torch, harmless on CPU and GPU alike), and RecBole's dataloader
# wraps read-only numpy arrays of pandas 3 frames in tensors that it never writes to.
warnings.filterwarnings("ignore", message=r"`torch\.cuda\.amp\.GradScaler\(args\.\.\.\)` is deprecated",
                        category=FutureWarning)
warnings.filterwarnings("ignore", message=r"The given NumPy array is not writable", category=UserWarning,
                        module=r"recbole\.")


def load_checkpoint(path, map_location=None):
    """Load a checkpoint written by this package: tensors and plain data only (``weights_only=True``), so loading a
    file runs no code from it. A pickled object (an old or foreign checkpoint, or a crafted file) is refused with a
    ValueError naming the file, without unpickling it."""
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such checkpoint file")
    if not zipfile.is_zipfile(path):  # torch.save's format since torch 1.6
        raise ValueError(f"{path}: not a checkpoint (torch.save writes a zip archive; this file is not one)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        first = error_message(err)
        raise ValueError(f"{path}: refused to load, it holds pickled objects, not only tensors and plain data (an "
                         f"old, foreign or crafted checkpoint; unpickling it could run code): {first}. One you made "
                         f"yourself: python -m recbole_specgr.upgrade_checkpoint {path} NEW.pth --trusted") from None


# The type a field with a role must have in the files of the sources named: ids are names (a float id was remapped to
# nothing: a bare "need at least one array to concatenate"), and a sequential dataset's time orders its rows (a token
# time was split by its token ids, i.e. by the order values first appear in the file, without a word).
ROLE_TYPES = {
    "USER_ID_FIELD": (FeatureType.TOKEN, "ids are names, e.g. user_id:token",
                      (FeatureSource.INTERACTION, FeatureSource.USER)),
    "ITEM_ID_FIELD": (FeatureType.TOKEN, "ids are names, e.g. item_id:token",
                      (FeatureSource.INTERACTION, FeatureSource.ITEM)),
    "TIME_FIELD": (FeatureType.FLOAT, "a number that orders time, e.g. timestamp:float in seconds; convert dates to "
                                      "numbers first", (FeatureSource.INTERACTION,)),
}


def _check_role_type(dataset, filepath, source, field, ftype):
    """ValueError naming the file unless ``field``, if it is the user id, item id or (for a sequential ``dataset``)
    time field of a file of ``source``, has its :data:`ROLE_TYPES` type."""
    for key, (expected, why, sources) in ROLE_TYPES.items():
        if key == "TIME_FIELD" and not isinstance(dataset, _RecBoleSequentialDataset):  # a general model's: unused
            continue
        if field == dataset.config[key] and source in sources and ftype != expected:
            raise ValueError(f"{filepath}: field {field!r} ({key}) has type {ftype.value}; expected {expected.value} "
                             f"({why})")


# pandas' python engine reads through the csv module, whose 128 KiB field limit refused a long item text ("field
# larger than field limit", no file named); raised once for the process, never lowered.
csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))
CSV_QUOTED = r'"(?:[^"]|"")*"'  # a whole field quoted as in CSV, '"' doubled inside


def _read_atomic_file(filepath, separator, usecols, dtype, encoding):
    """The DataFrame of an atomic file whose rows :func:`_check_atomic_rows` checked, each line split at every
    separator (as that check counts fields). A field quoted whole as in CSV (what ``recbole_specgr.data.amazon``
    writes for a text holding '"') is unquoted; any other text is read as written, so a text that merely starts with a
    quote (``"Weird Al" Live``: CSV parsing refused it in a message naming no file) stays as it is, line by line."""
    df = pd.read_csv(filepath, delimiter=separator, usecols=usecols, dtype=dtype, encoding=encoding, engine="python",
                     quoting=csv.QUOTE_NONE,
                     keep_default_na=False, na_values=[""])  # a title such as "NA" or "None" is text, not missing
    for column in df.columns:
        values = df[column]
        quoted = values.str.fullmatch(CSV_QUOTED).fillna(False).astype(bool)
        if quoted.any():
            df.loc[quoted, column] = values[quoted].str[1:-1].str.replace('""', '"', regex=False)
    return df


def field_names(header_line, separator):
    """The field names of an atomic file's header line (``title:token_seq`` → ``title``)."""
    return [column.split(":")[0] for column in header_line.rstrip("\r\n").split(separator)]


def _check_atomic_rows(filepath, separator, encoding):
    """The header of an atomic file, after checking that the file has one and that every non-blank row has as many
    fields as it; a violation is a ValueError naming the file and line."""
    number = 1
    try:
        with open(filepath, "r", encoding=encoding) as f:
            head = f.readline().rstrip("\r\n")
            if not head.strip():
                raise ValueError(f"{filepath}: empty file, expected a header line of 'name:type' columns")
            if head.startswith("\ufeff"):
                raise ValueError(f"{filepath}: starts with a byte-order mark; save it without one (or set "
                                 f"encoding: utf-8-sig)")
            for column in head.split(separator):
                if column.count(":") != 1:
                    hint = " (fields are separated by field_separator, a tab by default)" if " " in column else ""
                    raise ValueError(f"{filepath}: header column {column!r} is not 'name:type'{hint}")
            n_fields, n_rows = len(head.split(separator)), 0
            for number, line in enumerate(f, start=2):
                line = line.rstrip("\r\n")
                if not line.strip():
                    continue
                n_rows += 1
                if len(line.split(separator)) != n_fields:
                    raise ValueError(f"{filepath}:{number}: expected {n_fields} fields like the header, got "
                                     f"{len(line.split(separator))}: {line[:80]!r}")
    except UnicodeDecodeError as err:
        raise ValueError(f"{filepath}: not {encoding or locale.getpreferredencoding(False)} text near line "
                         f"{number + 1} ({err.reason}); set encoding: to the file's encoding") from None
    if n_rows == 0:
        raise ValueError(f"{filepath}: no rows after the header")
    names = field_names(head, separator)
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ValueError(f"{filepath}: the header names {twice} more than once")
    return head


def _to_float(column, filepath, field_type):
    """``column`` (strings, NaN for empty cells) as float64, or a ValueError naming the first non-numeric value."""
    values = pd.to_numeric(column, errors="coerce")
    bad = values.isna() & column.notna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise ValueError(f"{filepath}: column {field_type!r} expects numbers, got {column.iloc[row]!r} "
                         f"(data row {row + 1})")
    return values.astype(np.float64)


class PandasCompatDatasetMixin:
    """Copy-on-write-safe versions of the two RecBole ``Dataset`` steps that rely on chained in-place ``fillna``."""

    def _load_feat(self, filepath, source):
        load_col, unload_col = self._get_load_and_unload_col(source)
        if load_col == set():
            return None
        field_separator = self.config["field_separator"]
        encoding = self.config["encoding"]
        head = _check_atomic_rows(filepath, field_separator, encoding)
        columns, usecols, dtype = [], [], {}
        for field_type in head.split(field_separator):
            field, ftype = field_type.split(":")  # one colon each (_check_atomic_rows)
            try:
                ftype = FeatureType(ftype)
            except ValueError:
                raise ValueError(f"{filepath}: type {ftype!r} of field {field!r} is not supported") from None
            if load_col is not None and field not in load_col:
                continue
            if unload_col is not None and field in unload_col:
                continue
            _check_role_type(self, filepath, source, field, ftype)
            if isinstance(source, FeatureSource) or source != "link":
                self.field2source[field] = source
                self.field2type[field] = ftype
                if not ftype.value.endswith("seq"):
                    self.field2seqlen[field] = 1
                if "float" in ftype.value:
                    self.field2bucketnum[field] = 2
            columns.append(field)
            usecols.append(field_type)
            dtype[field_type] = str  # float columns are converted below, with an error naming a bad value
        if load_col is not None:  # RecBole skipped a listed field the file lacks without a word
            header = field_names(head, field_separator)
            roles = {self.config[key]: key for key in ("USER_ID_FIELD", "ITEM_ID_FIELD", "TIME_FIELD", "RATING_FIELD")}
            absent = [f"{field!r}" + (f" ({roles[field]})" if field in roles else "")
                      for field in sorted(set(load_col) - set(header))]
            if absent:
                raise ValueError(f"{filepath}: field {', '.join(absent)} is not in its header (load_col lists it); "
                                 f"header: {header}")
        if not columns:
            self.logger.warning(f"No columns has been loaded from [{source}]")
            return None

        df = _read_atomic_file(filepath, field_separator, usecols, dtype, encoding)
        df.columns = columns
        for field, field_type in zip(columns, usecols):
            if self.field2type.get(field) == FeatureType.FLOAT:
                df[field] = _to_float(df[field], filepath, field_type)
        seq_separator = self.config["seq_separator"]
        for field in columns:
            ftype = self.field2type[field]
            if not ftype.value.endswith("seq"):
                continue
            values = df[field].fillna("").to_numpy()
            if ftype == FeatureType.TOKEN_SEQ:
                df[field] = [np.array([t for t in v.split(seq_separator) if t]) for v in values]
            else:
                df[field] = [np.array([float(t) for t in v.split(seq_separator) if t]) for v in values]
            max_seq_len = max(map(len, df[field].values)) if len(df) else 0
            if self.config["seq_len"] and field in self.config["seq_len"]:
                seq_len = self.config["seq_len"][field]
                df[field] = [seq[:seq_len] for seq in df[field].values]
                self.field2seqlen[field] = min(seq_len, max_seq_len)
            else:
                self.field2seqlen[field] = max_seq_len
        return df

    def _fill_nan(self):
        for feat_name in self.feat_name_list:
            feat = getattr(self, feat_name)
            for field in feat:
                ftype = self.field2type[field]
                if ftype == FeatureType.TOKEN:
                    feat[field] = feat[field].fillna(0)
                elif ftype == FeatureType.FLOAT:
                    feat[field] = feat[field].fillna(feat[field].mean())
                else:
                    dtype = np.int64 if ftype == FeatureType.TOKEN_SEQ else np.float64
                    feat[field] = feat[field].apply(lambda x: np.array([], dtype=dtype) if isinstance(x, float) else x)

    def _remap(self, remap_list):
        if len(remap_list) == 0:
            return
        tokens = []
        for feat, field, ftype in remap_list:
            if ftype == FeatureType.TOKEN:
                tokens.append(feat[field].to_numpy())
            elif ftype == FeatureType.TOKEN_SEQ:
                tokens.append(np.concatenate(list(feat[field].to_numpy())) if len(feat) else np.array([]))
        split_point = np.cumsum(list(map(len, tokens)))[:-1]
        new_ids, mapping = pd.factorize(np.concatenate(tokens))
        new_ids_list = np.split(new_ids + 1, split_point)
        mapping = np.array(["[PAD]"] + list(mapping))
        token_id = {t: i for i, t in enumerate(mapping)}
        for (feat, field, ftype), ids in zip(remap_list, new_ids_list):
            if field not in self.field2id_token:
                self.field2id_token[field] = mapping
                self.field2token_id[field] = token_id
            if ftype == FeatureType.TOKEN:
                feat[field] = ids
            elif ftype == FeatureType.TOKEN_SEQ:
                lengths = feat[field].map(len).to_numpy()
                feat[field] = np.split(ids, np.cumsum(lengths)[:-1])


# -------------------------------------------------------------------------------------------------------------------
# RecBole's own dataset classes
# -------------------------------------------------------------------------------------------------------------------
# The mixin's steps are put on ``recbole.data.dataset.Dataset`` itself, so that every dataset class that derives from
# it (RecBole's ``Dataset`` for general / context models, ``SequentialDataset``, ``KnowledgeBasedDataset``, ours)
# loads atomic files the same, copy-on-write-safe way. What each patched method fixes on pandas 3:
#
# - ``Dataset._load_feat``: an empty ``token_seq`` / ``float_seq`` cell is NaN, and the chained
#   ``df[field].fillna("", inplace=True)`` is a no-op, so ``NaN.split`` fails. (Also: a token such as "NA" or "None"
#   stays a token; only an empty cell is missing.)
# - ``Dataset._fill_nan``: the chained ``feat[field].fillna(..., inplace=True)`` is a no-op, so missing token / float
#   user and item features stay NaN.
# - ``Dataset._remap``: ``Series.agg(len)`` is the Series' length, not each row's, so the ids of a ``token_seq`` field
#   (with or without ``alias_of_item_id``) cannot be split back into rows.
# - ``SequentialDataset._benchmark_presets``: the same ``agg(len)`` gives every row of ``benchmark_filename``
#   pre-split files the item-list length of the whole file.
#
# Not patched (no dataset here uses them): ``float_seq`` normalisation / discretisation and the KG entity remapping
# of ``token_seq`` fields keep RecBole's ``agg(len)``.

from recbole.data.dataset import Dataset as _RecBoleDataset  # noqa: E402
from recbole.data.dataset import SequentialDataset as _RecBoleSequentialDataset  # noqa: E402

_PATCHED_DATASET_METHODS = ("_load_feat", "_fill_nan", "_remap")


def _benchmark_presets(self):
    """``SequentialDataset._benchmark_presets`` with per-row item-list lengths."""
    list_suffix = self.config["LIST_SUFFIX"]
    for field in self.inter_feat:
        if field + list_suffix in self.inter_feat:
            setattr(self, f"{field}_list_field", field + list_suffix)
    self.set_field_property(self.item_list_length_field, FeatureType.TOKEN, FeatureSource.INTERACTION, 1)
    self.inter_feat[self.item_list_length_field] = self.inter_feat[self.item_id_list_field].map(len)


def patch_recbole_datasets():
    """Put the pandas-2/3-safe loading steps on RecBole's ``Dataset`` and ``SequentialDataset`` (idempotent)."""
    for name in _PATCHED_DATASET_METHODS:
        setattr(_RecBoleDataset, name, PandasCompatDatasetMixin.__dict__[name])
    _RecBoleSequentialDataset._benchmark_presets = _benchmark_presets


patch_recbole_datasets()
