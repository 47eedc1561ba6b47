"""keep_freed_memory: glibc stops handing freed memory back (no re-faulted pages per step), a glibc that refuses the
thresholds gets one warning, the user's own threshold settings win, and the quick start applies it."""
import logging
import os
import resource
import subprocess
import sys

import pytest

from recbole_specgr import allocator, quick_start


def glibc_with_small_pages():
    """Linux with glibc's malloc, 4 KiB-counted page faults (no transparent huge pages 'always', no preloaded
    allocator): where the fault counts below mean what they say."""
    try:
        glibc = sys.platform.startswith("linux") and os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (AttributeError, ValueError, OSError):
        return False
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            thp_always = "[always]" in f.read()
    except OSError:
        thp_always = False
    return glibc and not thp_always and "LD_PRELOAD" not in os.environ


FAULTS_SCRIPT = """
import resource, sys, torch
from recbole_specgr.allocator import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def step():  # a step's activations, freed at its end: 40-48 MB each, above glibc's largest default mmap threshold
    activations = [torch.ones(n) for n in (10_000_000, 12_000_000, 10_000_000)]
    del activations
for _ in range(3):
    step()
start = faults()
for _ in range(5):
    step()
print(faults() - start)
"""
STEP_BYTES = 4 * 32_000_000


def minor_faults(mode):
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("MALLOC_") and key not in ("GLIBC_TUNABLES", "LD_PRELOAD")}
    out = subprocess.run([sys.executable, "-c", FAULTS_SCRIPT, mode], env=env, capture_output=True, text=True,
                         check=True)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not glibc_with_small_pages(), reason="glibc's malloc, page faults of small pages")
def test_freed_memory_is_reused_without_new_page_faults():
    default, kept = minor_faults("default"), minor_faults("keep")
    pages = 5 * STEP_BYTES // resource.getpagesize()
    assert default > 0.8 * pages  # every step maps its 128 MB afresh and faults every page in
    assert kept < default / 10, (default, kept)  # the heap keeps them (an odd chunk may still be laid out anew)


class FakeMallopt:
    def __init__(self, largest_mmap_threshold):
        self.largest, self.calls = largest_mmap_threshold, []

    def __call__(self, option, value):
        self.calls.append((option, value))
        return int(option != allocator.M_MMAP_THRESHOLD or value <= self.largest)


def test_an_older_glibc_gets_the_largest_threshold_it_takes(monkeypatch):
    mallopt = FakeMallopt(largest_mmap_threshold=32 << 20)
    monkeypatch.setattr(allocator, "_glibc_mallopt", lambda: mallopt)
    assert allocator.keep_freed_memory() is True
    assert mallopt.calls == [(allocator.M_MMAP_THRESHOLD, 256 << 20), (allocator.M_MMAP_THRESHOLD, 32 << 20),
                             (allocator.M_TRIM_THRESHOLD, 1 << 30)]


def test_a_glibc_that_refuses_gets_one_warning(monkeypatch, caplog):
    monkeypatch.setattr(allocator, "_glibc_mallopt", lambda: FakeMallopt(largest_mmap_threshold=0))
    with caplog.at_level(logging.WARNING):
        assert allocator.keep_freed_memory() is False
    assert [r.message for r in caplog.records if "keep_freed_memory" in r.message] == [
        "keep_freed_memory: glibc refused the mmap/trim thresholds (mallopt); freed memory goes back to the system "
        "as usual"]


def test_without_glibc_nothing_is_set(monkeypatch, caplog):
    monkeypatch.setattr(allocator, "_glibc_mallopt", lambda: None)
    assert allocator.keep_freed_memory() is False
    assert not caplog.records


@pytest.mark.parametrize("variable, value, kept", [
    ("MALLOC_MMAP_THRESHOLD_", "65536", False),
    ("MALLOC_TRIM_THRESHOLD_", "0", False),
    ("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=0", False),
    ("GLIBC_TUNABLES", "glibc.malloc.arena_max=2", True),  # other settings leave the thresholds to us
    ("MALLOC_ARENA_MAX", "2", True),
])
def test_the_users_own_thresholds_win(monkeypatch, variable, value, kept):
    for name in allocator.USER_SETTINGS + ("GLIBC_TUNABLES",):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, value)
    mallopt = FakeMallopt(largest_mmap_threshold=256 << 20)
    monkeypatch.setattr(allocator, "_glibc_mallopt", lambda: mallopt)
    assert allocator.keep_freed_memory() is kept
    assert bool(mallopt.calls) is kept


@pytest.mark.parametrize("keep", [True, False])
def test_the_quick_start_keeps_freed_memory_unless_told_not_to(small_config, monkeypatch, keep):
    calls = []
    monkeypatch.setattr(quick_start, "keep_freed_memory", lambda: calls.append(1))
    config = {**small_config, "model": "SASRec", "dataset": "ml-100k", "epochs": 1, "train_batch_size": 2048,
              "n_layers": 1, "hidden_size": 16, "inner_size": 16, "keep_freed_memory": keep}
    quick_start.objective_function(config)
    assert len(calls) == int(keep)
