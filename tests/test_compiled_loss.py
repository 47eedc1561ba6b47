"""torch_compile: the compiled loss gives the eager values and gradients, the trainer trains through it, and a failed
compile falls back to eager with one warning."""
import logging
import shutil

import pytest
import torch

from recbole_specgr.quick_start import objective_function
from recbole_specgr.trainer.compiled_loss import CompiledLoss


class TinyLoss(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.proj = torch.nn.Linear(8, 5)

    def calculate_loss(self, batch):
        x, y = batch
        return torch.nn.functional.cross_entropy(torch.tanh(self.proj(x)) * 3, y)


@pytest.mark.filterwarnings("ignore:Guards may run slower on Python 3.13.0")  # the interpreter's, not ours
def test_compiled_loss_gives_the_eager_loss_and_gradients():
    if not (shutil.which("g++") or shutil.which("c++")):  # else it would compare the eager fall-back with itself
        pytest.skip("Inductor on a CPU needs a C++ compiler")
    model = TinyLoss()
    batch = (torch.randn(16, 8, generator=torch.Generator().manual_seed(1)), torch.arange(16) % 5)
    eager_loss = model.calculate_loss(batch)
    eager_grads = torch.autograd.grad(eager_loss, list(model.parameters()))
    compiled = CompiledLoss(model.calculate_loss)
    loss = compiled(batch)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    assert compiled.error is None  # compiled, not the eager fall-back
    assert loss.item() == pytest.approx(eager_loss.item(), rel=1e-5)
    for got, expected in zip(grads, eager_grads):
        assert torch.allclose(got, expected, rtol=1e-4, atol=1e-6)


def test_a_failed_compile_falls_back_to_eager_once(monkeypatch, caplog):
    calls = {"compiled": 0}

    def broken_compile(fn):
        def compiled(*args):
            calls["compiled"] += 1
            raise RuntimeError("InvalidCxxCompiler: no working C++ compiler found\nmore detail")
        return compiled

    monkeypatch.setattr(torch, "compile", broken_compile)
    model = TinyLoss()
    batch = (torch.ones(4, 8), torch.zeros(4, dtype=torch.long))
    loss = CompiledLoss(model.calculate_loss, "TinyLoss.calculate_loss")
    with caplog.at_level(logging.WARNING):
        first, second = loss(batch), loss(batch)
    assert first.item() == second.item() == pytest.approx(model.calculate_loss(batch).item())
    assert calls["compiled"] == 1  # never tried again
    assert isinstance(loss.error, RuntimeError)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["torch_compile: compiling TinyLoss.calculate_loss failed (RuntimeError: InvalidCxxCompiler: "
                        "no working C++ compiler found); training eager"]


def test_a_bug_in_the_loss_still_raises():
    def bad_loss(batch):
        raise IndexError("target 7 out of range")

    with pytest.raises(IndexError, match="target 7"):
        CompiledLoss(bad_loss)(None)


def test_the_trainer_trains_through_the_compiled_loss(small_config, monkeypatch):
    seen_batches = []

    def counting_compile(fn):
        def compiled(batch):
            seen_batches.append(len(batch))
            return fn(batch)
        return compiled

    monkeypatch.setattr(torch, "compile", counting_compile)
    config = {**small_config, "model": "SASRec", "dataset": "ml-100k", "epochs": 2, "train_batch_size": 2048,
              "torch_compile": True, "n_layers": 1, "hidden_size": 16, "inner_size": 16}
    result = objective_function(config)
    assert len(seen_batches) == result["learning_curve"][-1]["step"] > 0  # every optimizer step


def test_torch_compile_takes_only_a_bool(small_config):
    config = {**small_config, "model": "SASRec", "dataset": "ml-100k", "torch_compile": "yes",
              "n_layers": 1, "hidden_size": 16, "inner_size": 16}
    with pytest.raises(ValueError, match="torch_compile: expected bool .* got 'yes'"):
        objective_function(config)
