"""
recbole_specgr.threads
######################
:func:`one_cpu_thread`, for results cached by their inputs that must not depend on the machine's thread count.
"""

import contextlib

import torch


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
