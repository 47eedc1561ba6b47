"""
recbole_specgr.threads
######################
How this package uses CPU threads: :func:`one_cpu_thread` for results cached by their inputs, :func:`flush_subnormals`
for every thread that trains or evaluates on a CPU, and :func:`map_in_threads` for evaluation batches computed several
at a time (``eval_workers``).
"""

import contextlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from typing import Callable, Iterable, Iterator, TypeVar

import torch

Item = TypeVar("Item")
Result = TypeVar("Result")


@contextlib.contextmanager
def one_cpu_thread(device):
    """Run the block on one CPU thread (no-op off the CPU), for results cached by their inputs: with several threads,
    torch's CPU kernels sum in another order, so the text embeddings (up to 1.4e-7 on ml-100k) and the RQ-VAE's fit
    (1,224 of 1,682 ml-100k IDs changed after 60 epochs) would depend on the machine's thread count."""
    if torch.device(device).type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def flush_subnormals() -> None:
    """Flush subnormal floats to zero in the calling thread (a per-thread CPU mode): as a model grows confident its
    softmax tails (attention, the vocabulary) fall below 1e-38, and CPU kernels on subnormals ran a TIGER epoch 7×
    slower by epoch 4. The ranked lists' order keys rely on it too (:func:`~recbole_specgr.evaluation.ranked_scores`)."""
    torch.set_flush_denormal(True)


def map_in_threads(fn: Callable[[Item], Result], items: Iterable[Item], workers: int,
                   threads_each: int = 1) -> Iterator[Result]:
    """``fn(item)`` for each of ``items``, in their order, computed by ``workers`` threads at once, each running torch
    on ``threads_each`` threads with subnormals flushed (:func:`flush_subnormals`) and the caller's grad mode (both
    are per thread in torch).

    On a CPU, inference of these models is many small kernels (a TIGER decoder position costs ~5 µs), which torch's
    intra-op threads split poorly: the main job's evaluation ran 1.5–1.6× faster on two threads than on one, and 2.0×
    with two batches at a time on one thread each (``benchmarks/reports/speed_cpu.md`` section 18). Each ``fn(item)``
    computes what it would in a plain loop on ``threads_each`` threads, so the results do not depend on ``workers``;
    whatever ``fn`` builds at its first call must be safe to build from two threads at once (SpecGR's models build
    theirs under :data:`~recbole_specgr.model.speculative.BUILD_LOCK`).

    ``items`` are read up to ``2·workers`` ahead of the results handed out, and at most that many are in flight; the
    caller's thread count is set again at the end. ``workers`` ≤ 1: a plain loop in the caller, its threads untouched.
    An exception in ``fn`` is raised in the caller at that item's place (one in reading ``items``, up to ``2·workers``
    results early); items after it that have not started are cancelled, the running ones finish and are dropped.
    """
    if workers <= 1:
        yield from map(fn, items)
        return
    grad = torch.is_grad_enabled()

    def run(item):
        torch.set_num_threads(threads_each)
        flush_subnormals()
        with torch.set_grad_enabled(grad):
            return fn(item)

    caller_threads, pending = torch.get_num_threads(), iter(items)
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="eval-worker") as pool:
            in_flight = deque(pool.submit(run, item) for item in islice(pending, 2 * workers))
            try:
                while in_flight:
                    result = in_flight.popleft().result()
                    in_flight.extend(pool.submit(run, item) for item in islice(pending, 1))
                    yield result
            finally:
                for future in in_flight:
                    future.cancel()
    finally:  # the count is per thread, but torch also keeps the last one set for threads it starts later
        torch.set_num_threads(caller_threads)
