"""Shared fixtures: the hand-written tiny dataset, a small slice of ml-100k, and a per-session artifact cache."""

import importlib.util
import os
import re
import shutil

import pytest

import recbole_specgr  # noqa: F401  (its __init__ applies compat before any test module imports recbole)

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")


def load_benchmark_script(name):
    """The module of ``benchmarks/<name>.py`` (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(BENCHMARKS, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pytest_configure(config):
    """pytest resets warning filters per test: repeat compat's filter for RecBole's read-only-array warning (its
    dataloader wraps pandas 3's read-only arrays in tensors it never writes to), by message and origin only."""
    config.addinivalue_line("filterwarnings", "ignore:The given NumPy array is not writable:UserWarning:recbole")


@pytest.fixture(scope="module")
def single_thread():
    """Tiny tensors: torch's thread pool costs more than it saves (and a shared CI box makes it worse)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory):
    """One ``cache_dir`` for the whole session, so item texts are embedded once."""
    return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def ml100k_slice(tmp_path_factory):
    """Folder holding ``ml-100k/`` restricted to its first 150 users (about 15k interactions, all items kept)."""
    import importlib.util

    source = os.path.join(
        os.path.dirname(importlib.util.find_spec("recbole").origin), "dataset_example", "ml-100k"
    )
    root = tmp_path_factory.mktemp("data")
    target = root / "ml-100k"
    target.mkdir()
    with open(os.path.join(source, "ml-100k.inter")) as src, open(target / "ml-100k.inter", "w") as out:
        out.write(src.readline())
        for line in src:
            if int(line.split("\t", 1)[0]) <= 150:
                out.write(line)
    shutil.copy(os.path.join(source, "ml-100k.item"), target / "ml-100k.item")
    return str(root)


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    """Run inside a temporary folder (RecBole writes log/ and saved/ into the working directory)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["pytest"])  # RecBole's Config also parses sys.argv
    return tmp_path


@pytest.fixture
def small_config(run_dir, ml100k_slice, session_cache):
    """Config dict for quick end-to-end runs on the ml-100k slice."""
    return {
        "data_path": ml100k_slice,
        "cache_dir": session_cache,
        "checkpoint_dir": str(run_dir / "saved"),
        "epochs": 1,
        "state": "ERROR",
        "show_progress": False,
        "train_batch_size": 512,
        "eval_batch_size": 512,
        "seed": 2020,
    }


@pytest.fixture
def tiny_config(run_dir, session_cache):
    """Config dict for the hand-written ``tiny`` dataset (see tests/test_dataset.py for its expected split)."""
    return {
        "data_path": FIXTURES,
        "cache_dir": session_cache,
        "checkpoint_dir": str(run_dir / "saved"),
        "state": "ERROR",
        "load_col": {"inter": ["user_id", "item_id", "rating", "timestamp"], "item": ["item_id", "title", "year", "genre"]},
        "split_timestamps": [5, 8],
        "cold_start_items": "year >= 2000",
        "text_fields": ["title", "genre"],
        "MAX_ITEM_LIST_LENGTH": 2,
    }


@pytest.fixture
def exits_with_error(capsys):
    """``check(pattern, main, argv)``: ``main(argv)`` exits with status 2 after printing one ``error:`` line that
    matches ``pattern`` and no traceback (the command-line tools' bad-input contract); returns that line."""

    def check(pattern, main, argv):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith("error: ")]
        assert exit_info.value.code == 2 and len(errors) == 1 and "Traceback" not in err, err
        assert re.search(pattern, errors[0]), errors[0]
        return errors[0]

    return check
