"""
recbole_specgr.data.prepare
###########################
Make ``config["data_path"]`` point at a folder of plain RecBole atomic files before the dataset is loaded:
Amazon Reviews 2023 benchmarks are converted (:mod:`recbole_specgr.data.amazon`), a gzipped ``.inter`` (as shipped for
ML-1M) is unpacked into ``cache_dir`` (again when the source changes).
"""

import gzip
import os
import shutil
import zlib
from logging import getLogger

from recbole_specgr.atomic import atomic_write


def prepare_data_path(config):
    """Resolve ``config["data_path"]`` (``<data_path>/<dataset>``) to a folder that RecBole can read; raise a clear
    error naming the folder and the files expected when the dataset cannot be found."""
    name, folder = config["dataset"], config["data_path"]
    given = os.path.dirname(os.path.abspath(folder))  # the data_path the user gave (RecBole appended the name)
    if os.path.basename(given) == name and not os.path.isdir(folder) and (
            os.path.isdir(os.path.join(given, "raw")) or os.path.isfile(os.path.join(given, f"{name}.inter"))):
        raise ValueError(f"data_path: {given} is the '{name}' folder itself; set data_path to the folder above it, "
                         f"{os.path.dirname(given)}")  # (Amazon's converter would have made {given}/{name}/raw)
    if name.startswith("amazon_"):
        from recbole_specgr.data.amazon import AMAZON_DATASETS, ensure_atomic_files

        if name in AMAZON_DATASETS:  # another amazon_* name is a dataset of the user's own atomic files
            ensure_atomic_files(name, given)
            return
    inter = os.path.join(folder, f"{name}.inter")
    if os.path.isfile(inter):
        return
    if os.path.isfile(inter + ".gz"):
        config["data_path"] = _unpack_gzipped(folder, name, config["cache_dir"] or "cache")
        return
    raise ValueError(
        f"dataset '{name}': no '{name}.inter' (or '{name}.inter.gz') in {os.path.abspath(folder)}; "
        "set data_path to the folder that holds <dataset>/<dataset>.inter"
    )


def _unpack_gzipped(folder, name, cache_dir):
    """``<name>.inter.gz`` unpacked, and the dataset's other files copied, into ``<cache_dir>/datasets/<name>``. Each
    copy is written atomically and made again when its source is newer (an edited ``.item`` was never copied again)."""
    target = os.path.join(cache_dir, "datasets", name)
    packed = os.path.join(folder, f"{name}.inter.gz")
    inter = os.path.join(target, f"{name}.inter")
    if _stale(inter, packed):
        getLogger().info(f"[DATA] unpacking {name}.inter.gz into {target}")
        try:
            with atomic_write(inter) as out, gzip.open(packed, "rb") as src:
                shutil.copyfileobj(src, out)
        except (gzip.BadGzipFile, EOFError, zlib.error) as err:
            raise ValueError(f"{packed}: not a complete gzip file ({err})") from None
        _stamp(inter, packed)
    for file in os.listdir(folder):
        source, copy = os.path.join(folder, file), os.path.join(target, file)
        if file.startswith(name + ".") and not file.endswith(".gz") and _stale(copy, source):
            with atomic_write(copy) as out, open(source, "rb") as src:
                shutil.copyfileobj(src, out)
            _stamp(copy, source)
    return target


def _stamp(copy, source):
    """Give ``copy`` the modification time of ``source``: the mark of a finished copy of that source."""
    stat = os.stat(source)
    os.utime(copy, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def _stale(copy, source):
    """No ``copy`` yet, or not one finished from this ``source`` (its modification time differs: a copy cut short, an
    edited source, or one replaced by an older file)."""
    return not os.path.isfile(copy) or os.stat(copy).st_mtime_ns != os.stat(source).st_mtime_ns
