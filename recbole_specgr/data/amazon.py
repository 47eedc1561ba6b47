"""
recbole_specgr.data.amazon
##########################
Amazon Reviews 2023 (5-core, timestamp split with history) → RecBole atomic files.

Reference:
    Yupeng Hou et al. "Bridging Language and Items for Retrieval and Recommendation." arXiv 2403.03952.
    Files: https://huggingface.co/datasets/McAuley-Lab/Amazon-Reviews-2023

Inputs, in ``<data_path>/<dataset>/raw/`` under their published names (downloaded from the hub when missing)::

    <Category>.train.csv  <Category>.valid.csv  <Category>.test.csv    user_id,parent_asin,rating,timestamp,history
    meta_<Category>.jsonl                                               one JSON object per item

Outputs, in ``<data_path>/<dataset>/``::

    <dataset>.inter       user_id:token  item_id:token  rating:float  timestamp:float   (ms, one row per CSV row)
    <dataset>.item        item_id:token  title:token  features:token  description:token
                          categories:token_seq  store:token   (one row per reviewed item)
    <dataset>.split.json  {"split_timestamps": [t_valid, t_test]}   (first valid / first test timestamp, ms)

Free text is typed ``:token`` so that RecBole keeps each text whole (``token_seq`` would split it on spaces);
``categories`` is a ``token_seq`` of category names with spaces replaced by ``_``. Every output is written to a
temporary file and moved into place only after all of them were written, so a failed run leaves none behind.
"""

import argparse
import csv
import io
import json
import logging
import os

import numpy as np
import pandas as pd
from huggingface_hub import hf_hub_download

from recbole_specgr.atomic import move_into_place, temporary_path
from recbole_specgr.data.amazon_meta import TEXT_FIELDS, read_item_meta

AMAZON_DATASETS = {
    "amazon_games": "Video_Games",
    "amazon_office": "Office_Products",
    "amazon_phones": "Cell_Phones_and_Accessories",
}
HF_REPO_ID = "McAuley-Lab/Amazon-Reviews-2023"
SPLITS = ("train", "valid", "test")
CSV_HEADER = "user_id,parent_asin,rating,timestamp,history"
INTER_KEY = ["user_id", "parent_asin", "rating", "timestamp"]
_TIMESTAMP_EXPECTED = "a non-negative integer (Unix time in ms)"
_CSV_DTYPES = {"user_id": str, "parent_asin": str, "rating": np.float64, "timestamp": np.int64, "history": str}
ITEM_HEADER = {
    "item_id": "item_id:token",
    "title": "title:token",
    "features": "features:token",
    "description": "description:token",
    "categories": "categories:token_seq",
    "store": "store:token",
}

_logger = logging.getLogger(__name__)


def raw_file_names(category: str) -> dict:
    """Local file name in ``raw/`` → path of the same file in the hub repository."""
    names = {f"{category}.{s}.csv": f"benchmark/5core/timestamp_w_his/{category}.{s}.csv" for s in SPLITS}
    names[f"meta_{category}.jsonl"] = f"raw/meta_categories/meta_{category}.jsonl"
    return names


def atomic_file_paths(dataset_name: str, data_path: str) -> dict:
    """Paths of the three outputs: keys ``inter``, ``item``, ``split``."""
    folder = os.path.join(data_path, dataset_name)
    suffixes = {"inter": ".inter", "item": ".item", "split": ".split.json"}
    return {key: os.path.join(folder, dataset_name + suffix) for key, suffix in suffixes.items()}


def ensure_atomic_files(dataset_name: str, data_path: str) -> None:
    """Make sure ``<data_path>/<dataset_name>/`` holds the RecBole atomic files, converting the raw files if needed.

    Args:
        dataset_name: one of :data:`AMAZON_DATASETS` (e.g. ``amazon_games``).
        data_path: the RecBole ``data_path`` folder.

    The atomic files are converted again when a raw file in ``raw/`` is not the one they were converted from (its size
    or modification time differs from those recorded in ``<dataset_name>.raw.json`` at the conversion, so a file
    replaced by an older copy counts too: ``tar -x``, ``cp -p`` keep its old time); with no raw files left, the atomic
    files are used as they are.

    Raises:
        ValueError: unknown dataset name, or malformed raw files (the message names the file and line).
        FileNotFoundError: raw files absent from ``raw/`` and not downloadable (the message names them and the folder).
    """
    if dataset_name not in AMAZON_DATASETS:
        raise ValueError(f"dataset: unknown Amazon dataset {dataset_name!r}, expected one of {sorted(AMAZON_DATASETS)}")
    paths = atomic_file_paths(dataset_name, data_path)
    category = AMAZON_DATASETS[dataset_name]
    raw_dir = os.path.join(data_path, dataset_name, "raw")
    stamp_path = os.path.join(os.path.dirname(paths["inter"]), f"{dataset_name}.raw.json")
    if all(os.path.isfile(path) for path in paths.values()):
        current = raw_fingerprints(category, raw_dir)
        try:
            with open(stamp_path, encoding="utf-8") as f:
                recorded = json.load(f)
        except (OSError, ValueError):
            recorded = None
        recorded = recorded if isinstance(recorded, dict) else None  # unreadable: as if none were kept
        if recorded is None:  # converted before the record was kept: by modification times, as then
            written = min(os.path.getmtime(path) for path in paths.values())
            changed = [name for name in current if os.path.getmtime(os.path.join(raw_dir, name)) > written]
        else:
            changed = [name for name, fingerprint in current.items() if recorded.get(name) != fingerprint]
        if not changed:
            _logger.info(f"[DATA] {dataset_name}: using the atomic files in {os.path.dirname(paths['inter'])} "
                         f"(converted earlier from these raw files; another raw file is converted again)")
            if recorded is None and current:
                _write_all_atomic([(stamp_path, lambda tmp: _write_text(json.dumps(current), tmp))])
            return
        _logger.info(f"[DATA] {dataset_name}: {', '.join(changed)} not the file the atomic files were converted "
                     f"from: converting again")
    fetch_raw_files(category, raw_dir)
    read_from = json.dumps(raw_fingerprints(category, raw_dir))  # before reading: a file changed meanwhile differs
    convert(category, raw_dir, paths, stamp=(stamp_path, read_from))


def raw_fingerprints(category: str, raw_dir: str) -> dict:
    """``{file name: [size, modification time in ns]}`` of the raw files present in ``raw_dir``."""
    found = {}
    for name in raw_file_names(category):
        path = os.path.join(raw_dir, name)
        if os.path.isfile(path):
            stat = os.stat(path)
            found[name] = [stat.st_size, stat.st_mtime_ns]
    return found


def fetch_raw_files(category: str, raw_dir: str) -> None:
    """Download from the hub the raw files that ``raw_dir`` lacks; one clear error if that is impossible."""
    names = raw_file_names(category)
    missing = [name for name in names if not os.path.isfile(os.path.join(raw_dir, name))]
    if not missing:
        return
    os.makedirs(raw_dir, exist_ok=True)
    for name in missing:
        _logger.info(f"[DATA] downloading {names[name]} from {HF_REPO_ID} into {raw_dir}")
        try:
            downloaded = hf_hub_download(
                repo_id=HF_REPO_ID, repo_type="dataset", filename=names[name], local_dir=raw_dir
            )
        except Exception as err:  # offline, HTTP, auth or timeout: all end in the same actionable message
            still_missing = [n for n in names if not os.path.isfile(os.path.join(raw_dir, n))]
            raise FileNotFoundError(
                f"Amazon Reviews 2023 {category}: missing {', '.join(still_missing)} in {raw_dir}/ and the download "
                f"from https://huggingface.co/datasets/{HF_REPO_ID} failed ({type(err).__name__}); put the 4 files "
                f"{', '.join(names)} (hub paths {', '.join(names.values())}) into {raw_dir}/"
            ) from err
        os.replace(downloaded, os.path.join(raw_dir, name))
        try:  # drop the now empty hub sub-folders (benchmark/5core/..., raw/meta_categories)
            os.removedirs(os.path.dirname(downloaded))
        except OSError:
            pass


def convert(category: str, raw_dir: str, paths: dict, stamp=None) -> None:
    """Convert the raw files of ``category`` in ``raw_dir`` into the atomic files ``paths`` (see the module doc), and
    write ``stamp`` = ``(path, text)`` last with them (the record of the raw files they come from)."""
    csv_paths = [os.path.join(raw_dir, f"{category}.{split}.csv") for split in SPLITS]
    frames = [read_interactions(path) for path in csv_paths]
    cutoffs = split_cutoffs(frames, csv_paths)

    inter = pd.concat(frames, ignore_index=True)
    duplicated = _codes(inter, INTER_KEY).duplicated().to_numpy()
    if duplicated.any():
        _logger.warning(f"[DATA] {category}: dropped {int(duplicated.sum())} exact duplicate interaction rows")
        inter = inter[~duplicated].reset_index(drop=True)
    inter = order_ties_by_history(inter)
    n_mismatch = count_history_mismatches(inter)
    if n_mismatch:
        _logger.warning(f"[DATA] {category}: {n_mismatch} of {len(inter)} rows have a history that is not the user's "
                        f"earlier items in time order")

    item_ids = inter["parent_asin"].unique()  # order of first appearance
    meta_path = os.path.join(raw_dir, f"meta_{category}.jsonl")
    meta = read_item_meta(meta_path, set(item_ids))
    n_missing = len(item_ids) - len(meta)
    if n_missing:
        _logger.warning(f"[DATA] {category}: {n_missing} of {len(item_ids)} items have no row in {meta_path}; "
                        f"their text fields are empty")
    empty = ("",) * len(TEXT_FIELDS)
    items = pd.DataFrame([meta.get(asin, empty) for asin in item_ids], columns=list(TEXT_FIELDS))
    items.insert(0, "item_id", item_ids)

    inter_header = ["user_id:token", "item_id:token", "rating:float", "timestamp:float"]
    split_json = json.dumps({"split_timestamps": list(cutoffs)}) + "\n"
    # split first, inter then the stamp last: an interrupted move never leaves .inter + .item without their split
    # file, nor a record of the new raw files beside older atomic files (an older record makes the next run convert)
    _write_all_atomic([
        (paths["split"], lambda tmp: _write_text(split_json, tmp)),
        (paths["item"], lambda tmp: _write_tsv(list(ITEM_HEADER.values()), items, tmp)),
        (paths["inter"], lambda tmp: _write_tsv(inter_header, inter[INTER_KEY], tmp)),
    ] + ([(stamp[0], lambda tmp: _write_text(stamp[1], tmp))] if stamp else []))
    _logger.info(f"[DATA] {category}: wrote {len(inter)} interactions, {len(items)} items, "
                 f"split_timestamps {list(cutoffs)}")


def read_interactions(path: str) -> pd.DataFrame:
    """Read and validate one ``<Category>.<split>.csv``.

    Returns:
        DataFrame with ``user_id``, ``parent_asin``, ``history`` (str), ``rating`` (float64), ``timestamp`` (int64, ms).

    Raises:
        ValueError: wrong header, a row without exactly 5 fields, an empty id, a non-numeric rating or a timestamp
            that is not a non-negative integer; the message names the file and line.
    """
    with open(path, "rb") as f:
        data = f.read()
    end = data.find(b"\n")
    header = data[: end if end >= 0 else len(data)].rstrip(b"\r").decode("utf-8", errors="replace")
    if header != CSV_HEADER:
        raise ValueError(f"{path}: line 1: header must be exactly {CSV_HEADER!r}, got {header!r}")
    n_fields = CSV_HEADER.count(",") + 1
    n_lines = data.count(b"\n") + (not data.endswith(b"\n"))

    def read(dtype):
        return pd.read_csv(io.BytesIO(data), dtype=dtype, na_filter=False, quoting=csv.QUOTE_NONE,
                           skip_blank_lines=False, engine="c")

    try:  # fast path: the C parser types the columns; too many fields or an unparsable number raise
        df = read(dtype=_CSV_DTYPES)
    except (ValueError, OverflowError):  # OverflowError: an integer beyond int64
        df = None
    # a row with too few fields parses silently (missing values read as ""): the comma total reveals it
    if df is None or data.count(b",") != (n_fields - 1) * n_lines:
        _check_field_counts(data, path, n_fields)
    if df is None:  # slow path, only to name the bad line
        try:
            df = read(dtype=str)
        except UnicodeDecodeError as err:
            raise ValueError(f"{path}: not UTF-8 text ({err.reason})") from None
        rating = pd.to_numeric(df["rating"], errors="coerce")
        _raise_first_bad(~np.isfinite(rating), df["rating"], path, "rating", "a number")
        df["rating"] = rating.astype(np.float64)
        timestamp = pd.to_numeric(df["timestamp"], errors="coerce")
        bad = ~np.isfinite(timestamp) | (timestamp % 1 != 0) | (timestamp.abs() >= 2.0**63)
        _raise_first_bad(bad, df["timestamp"], path, "timestamp", _TIMESTAMP_EXPECTED)
        df["timestamp"] = timestamp.astype(np.int64)
    for field in ("user_id", "parent_asin"):
        _raise_first_bad(df[field] == "", df[field], path, field, "a non-empty id")
    for field in ("user_id", "parent_asin", "history"):  # the atomic files are tab-separated lines
        _raise_first_bad(df[field].str.contains(r"[\t\r]"), df[field], path, field, "free of tabs and carriage returns")
    _raise_first_bad(~np.isfinite(df["rating"]), df["rating"], path, "rating", "a number")
    _raise_first_bad(df["timestamp"] < 0, df["timestamp"], path, "timestamp", _TIMESTAMP_EXPECTED)
    return df


def _codes(df: pd.DataFrame, columns: list) -> pd.DataFrame:
    """The ``columns`` of ``df`` as integer codes (fast duplicate detection on string columns)."""
    return pd.DataFrame({column: pd.factorize(df[column])[0] for column in columns})


def _check_field_counts(data: bytes, path: str, n_fields: int) -> None:
    """Raise on the first line of ``data`` that does not hold exactly ``n_fields`` comma-separated fields."""
    buf = np.frombuffer(data, dtype=np.uint8)
    line_ends = np.flatnonzero(buf == ord("\n"))
    if buf.size and buf[-1] != ord("\n"):
        line_ends = np.append(line_ends, buf.size)
    commas = np.flatnonzero(buf == ord(","))
    per_line = np.bincount(np.searchsorted(line_ends, commas), minlength=line_ends.size)  # commas of each line
    bad = np.flatnonzero(per_line != n_fields - 1)
    if bad.size:
        raise ValueError(f"{path}: line {bad[0] + 1}: expected {n_fields} comma-separated fields ({CSV_HEADER}), "
                         f"found {per_line[bad[0]] + 1}")


def _raise_first_bad(bad, values: pd.Series, path: str, field: str, expected: str) -> None:
    """Raise naming the file line of the first True in ``bad`` (row i of the frame is line i + 2)."""
    bad = np.asarray(bad)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{path}: line {row + 2}: {field} must be {expected}, got {values.iloc[row]!r}")


def split_cutoffs(frames: list, paths: list) -> tuple:
    """``(t_valid, t_test)``: the first timestamp of the valid and of the test file, after checking the time split.

    Raises:
        ValueError: a file has no rows, or a file has a row later than the first row of the next split.
    """
    for frame, path in zip(frames, paths):
        if frame.empty:
            raise ValueError(f"{path}: no interaction rows")
    starts = [int(frame["timestamp"].min()) for frame in frames[1:]]
    for earlier, path, start, next_path in zip(frames[:-1], paths[:-1], starts, paths[1:]):
        latest = int(earlier["timestamp"].max())
        if latest > start:
            units = (" (one looks like seconds, the other like milliseconds: the published files hold milliseconds)"
                     if min(latest, start) < 10 ** 11 <= max(latest, start) else "")
            raise ValueError(f"{path}: latest timestamp {latest} is after the first timestamp {start} of "
                             f"{next_path}; the files are not a clean time split{units}")
        n_tied = int((earlier["timestamp"] == start).sum())
        if n_tied:
            _logger.warning(f"[DATA] {path}: {n_tied} rows have the timestamp {start} that starts {next_path}; "
                            f"a cut-off rule 'timestamp >= cut-off' puts them in the later split")
    return tuple(starts)


def order_ties_by_history(inter: pd.DataFrame) -> pd.DataFrame:
    """``inter`` with each user's interactions of one timestamp in the order their ``history`` gives (the shorter
    history first), where file order may differ; every other row keeps its place. The dataset orders a user's
    interactions by time and, among equal times, by file order: this makes that the benchmark's own order."""
    user_code = pd.factorize(inter["user_id"])[0]
    tie_group = pd.Series(np.arange(len(inter))).groupby([user_code, inter["timestamp"].to_numpy()]).transform("min")
    history_len = inter["history"].str.count(" ").to_numpy() + (inter["history"] != "").to_numpy()
    order = np.lexsort((history_len, tie_group.to_numpy()))  # a tie's rows at its first row's place, by history
    return inter.iloc[order].reset_index(drop=True)


def count_history_mismatches(inter: pd.DataFrame) -> int:
    """Number of rows whose ``history`` differs from the user's earlier items, ordered by (timestamp, file order).

    Fast path: a row is right if its history is the previous row's history plus the previous item and that previous
    row is right; a user's first row is right if its history is empty. Only rows failing the local test are compared
    in full (there are none on clean data).
    """
    user_code = pd.factorize(inter["user_id"])[0]
    order = np.lexsort((inter["timestamp"].to_numpy(), user_code))  # by user, then time; stable
    user = user_code[order]
    item = inter["parent_asin"].to_numpy(dtype=object)[order]
    history = inter["history"].to_numpy(dtype=object)[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = user[1:] != user[:-1]
    prev_history, prev_item = np.roll(history, 1), np.roll(item, 1)  # row 0 wraps around but is a first row
    extended = np.where(prev_history == "", prev_item, prev_history + " " + prev_item)
    local_ok = np.where(first, history == "", history == extended)

    ok = np.where(first, local_ok, np.nan)  # 1.0 / 0.0 known, NaN = same as the previous row
    suspects = np.flatnonzero(~first & ~local_ok)
    if suspects.size:
        position = np.arange(len(order)) - np.maximum.accumulate(np.where(first, np.arange(len(order)), 0))
        involved = np.isin(user, user[suspects])
        sequences = pd.Series(item[involved]).groupby(user[involved], sort=False).agg(list)
        for i in suspects:
            ok[i] = history[i] == " ".join(sequences[user[i]][: position[i]])
    return int((pd.Series(ok).ffill() == 0).sum())  # every user's first row is known, so ffill stays within users


def _write_tsv(header: list, df: pd.DataFrame, path: str) -> None:
    # QUOTE_MINIMAL quotes fields holding '"', which RecBole's pandas reader (default quotechar) reads back unchanged
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(zip(*(df[column].tolist() for column in df.columns)))


def _write_text(text: str, path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def _write_all_atomic(writers: list) -> None:
    """Write every ``(path, write(tmp_path))`` to a temporary file beside ``path``, then move them all in place."""
    written = []
    try:
        for path, write in writers:
            tmp = temporary_path(path)  # removed by the next write into the folder if this process is killed
            written.append((tmp, path))
            write(tmp)
        for tmp, path in written:
            move_into_place(tmp, path)
    finally:
        for tmp, _ in written:
            if os.path.exists(tmp):
                os.remove(tmp)


def summarize(dataset_name: str, data_path: str) -> dict:
    """Counts and cut-offs of converted atomic files: ``users``, ``items``, ``interactions``, ``split_timestamps``."""
    paths = atomic_file_paths(dataset_name, data_path)
    inter = pd.read_csv(paths["inter"], sep="\t", usecols=[0, 1], dtype=str, keep_default_na=False)
    split = None
    if os.path.isfile(paths["split"]):
        with open(paths["split"], encoding="utf-8") as f:
            split = json.load(f)["split_timestamps"]
    return {
        "users": inter.iloc[:, 0].nunique(),
        "items": inter.iloc[:, 1].nunique(),
        "interactions": len(inter),
        "split_timestamps": split,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Convert an Amazon Reviews 2023 dataset into RecBole atomic files.")
    parser.add_argument("--dataset", required=True, choices=sorted(AMAZON_DATASETS))
    parser.add_argument("--data_path", default="dataset/")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        ensure_atomic_files(args.dataset, args.data_path)
    except (ValueError, OSError) as err:  # malformed or missing raw files: one line, as argparse does
        parser.exit(2, f"error: {err}\n")
    s = summarize(args.dataset, args.data_path)
    print(f"{args.dataset}: {s['users']} users, {s['items']} items, {s['interactions']} interactions, "
          f"split_timestamps (ms) {s['split_timestamps']}")


if __name__ == "__main__":
    main()
