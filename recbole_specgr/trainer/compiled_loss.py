"""
recbole_specgr.trainer.compiled_loss
####################################
``torch_compile: True``: the training loss (forward and backward) through :func:`torch.compile`, with a clean fall
back to eager.

Inductor needs a working C++ compiler on a CPU and does not take every model; a run should not die for that. The
first call compiles; if compiling fails, one warning names the error and every later call runs eager. A bug of the
loss itself still surfaces: the eager call that follows a failure raises it again. Measured on the 2-core CPU:
``benchmarks/bench_tiger_train.py --compile`` (``benchmarks/reports/tiger_train_cpu.md``).
"""

import logging

import torch


class CompiledLoss:
    """``loss_fn`` (e.g. ``model.calculate_loss``) compiled on first use, eager for good once compiling has failed.

    Args:
        loss_fn: the eager loss, called with one training batch.
        name (str): what the warning calls it.

    Attributes:
        error (Exception or None): why compiling failed (None: compiled, or not tried yet).
    """

    def __init__(self, loss_fn, name="loss"):
        self.eager = loss_fn
        self.compiled = torch.compile(loss_fn)
        self.name = name
        self.error = None

    def __call__(self, batch):
        if self.error is None:
            try:
                return self.compiled(batch)
            except Exception as err:  # no C++ compiler, an op Inductor does not take, ...
                self.error = err
                first_line = (str(err).strip().splitlines() or [""])[0][:200]
                logging.getLogger(__name__).warning(
                    f"torch_compile: compiling {self.name} failed ({type(err).__name__}: {first_line}); "
                    "training eager")
        return self.eager(batch)
