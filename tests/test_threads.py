"""map_in_threads: evaluation batches several at a time, in order, each on its share of torch's threads."""

import threading

import pytest
import torch

from recbole_specgr.threads import map_in_threads


@pytest.fixture
def two_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


def test_results_come_in_the_items_order_when_later_items_finish_first():
    """Item 1 waits until item 2 has finished: the results still come 0, 1, 2, 3, …"""
    done = {i: threading.Event() for i in range(8)}

    def work(i):
        if i == 1:
            assert done[2].wait(timeout=30)
        done[i].set()
        return i * i

    assert list(map_in_threads(work, range(8), workers=2)) == [i * i for i in range(8)]


def test_items_run_in_at_most_workers_threads_with_at_most_two_per_worker_in_flight():
    pulled, ran_in = [], {}

    def items():
        for i in range(10):
            pulled.append(i)
            yield i

    def work(i):
        ran_in[i] = threading.current_thread()
        return i

    results = map_in_threads(work, items(), workers=2)
    assert pulled == []  # nothing before the first result is asked for
    assert next(results) == 0 and pulled == list(range(5))  # 0 … 3 submitted, then 4 when 0 came back
    assert list(results) == list(range(1, 10))
    assert threading.current_thread() not in ran_in.values() and len(set(ran_in.values())) <= 2


def test_workers_run_on_their_share_of_threads_with_the_callers_grad_mode_and_subnormals_flushed(two_threads):
    def state(_):
        subnormal = torch.tensor([1e-39]) * 1.0  # 0 once flushed
        return torch.get_num_threads(), torch.is_grad_enabled(), float(subnormal[0])

    torch.set_flush_denormal(False)  # the caller does not flush (new threads would inherit its mode)
    with torch.no_grad():
        seen = list(map_in_threads(state, range(6), workers=2, threads_each=1))
    assert [s[:2] for s in seen] == [(1, False)] * 6
    flushing = torch.set_flush_denormal(True)  # False where the CPU has no such mode
    torch.set_flush_denormal(False)
    if flushing:
        assert [s[2] for s in seen] == [0.0] * 6
    assert torch.get_num_threads() == 2 and float(torch.tensor([1e-39])[0]) > 0  # the caller's own, untouched


def test_one_worker_is_a_plain_loop_in_the_caller(two_threads):
    seen = list(map_in_threads(lambda i: (i, torch.get_num_threads(), threading.current_thread()), range(3), 1))
    assert seen == [(i, 2, threading.current_thread()) for i in range(3)]


@pytest.mark.parametrize("failing", [0, 3])
def test_an_error_is_raised_at_its_items_place_and_the_thread_count_restored(two_threads, failing):
    def work(i):
        if i == failing:
            raise ValueError(f"item {i}")
        return i

    got = []
    with pytest.raises(ValueError, match=f"item {failing}"):
        for result in map_in_threads(work, range(8), workers=2):
            got.append(result)
    assert got == list(range(failing))
    assert torch.get_num_threads() == 2
