"""keep_freed_memory: glibc stops handing freed memory back (no re-faulted pages per step), leaves the user's own
MALLOC_* settings alone, and the quick start applies it."""
import ctypes
import os
import subprocess
import sys

import pytest

from recbole_specgr import allocator, quick_start

try:
    GLIBC = sys.platform.startswith("linux") and os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
except (AttributeError, ValueError, OSError):
    GLIBC = False

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


def minor_faults(mode):
    env = {key: value for key, value in os.environ.items() if not key.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", FAULTS_SCRIPT, mode], env=env, capture_output=True, text=True,
                         check=True)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
def test_freed_memory_is_reused_without_new_page_faults():
    default, kept = minor_faults("default"), minor_faults("keep")
    assert default > 100_000  # every step maps its 128 MB afresh: ~31,000 pages faulted in
    assert kept < default / 10, (default, kept)  # the heap keeps them (an odd chunk may still be laid out anew)


def test_the_users_own_malloc_settings_win(monkeypatch):
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")

    def no_libc(*args, **kwargs):
        raise AssertionError("glibc must not be touched")

    monkeypatch.setattr(ctypes, "CDLL", no_libc)
    assert allocator.keep_freed_memory() is False


@pytest.mark.parametrize("keep", [True, False])
def test_the_quick_start_keeps_freed_memory_unless_told_not_to(small_config, monkeypatch, keep):
    calls = []
    monkeypatch.setattr(quick_start, "keep_freed_memory", lambda: calls.append(1))
    config = {**small_config, "model": "SASRec", "dataset": "ml-100k", "epochs": 1, "train_batch_size": 2048,
              "n_layers": 1, "hidden_size": 16, "inner_size": 16, "keep_freed_memory": keep}
    quick_start.objective_function(config)
    assert len(calls) == int(keep)
