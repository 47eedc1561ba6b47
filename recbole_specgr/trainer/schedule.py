"""
recbole_specgr.trainer.schedule
###############################
Per-step learning-rate schedules: linear warmup from 0, then constant, linear or cosine decay to a floor.

RecBole 1.2.1's Trainer keeps the learning rate constant. The generative models here need the recipe TIGER and
SpecGR are trained with (the reference: 10k warmup steps, cosine decay over 200k steps, gradient clipping at 1.0).
The schedule is a :class:`torch.optim.lr_scheduler.LambdaLR` stepped after every optimizer step (a step post-hook),
so RecBole's own ``_train_epoch`` runs unchanged.

Config keys (``properties/overall.yaml``):

- ``lr_scheduler``: ``constant`` (RecBole's behaviour, the default), ``linear`` or ``cosine``;
- ``warmup_steps``: optimizer steps of linear warmup from 0 to ``learning_rate``;
- ``lr_min_ratio``: the floor, as a fraction of ``learning_rate``, reached at the last step;
- ``scheduler_total_steps``: the step the decay ends at; ``~`` = ``epochs`` × batches per epoch (early stopping may end
  training before it).
"""

import math

import torch

SCHEDULES = ("constant", "linear", "cosine")


def lr_multiplier(step, warmup_steps, total_steps, schedule="cosine", min_ratio=0.0):
    r"""The factor :math:`m(s)` that multiplies the peak learning rate at optimizer step ``s`` (0-based).

    .. math::
        m(s) = s / W \quad (s < W), \qquad m(s) = r + (1 - r)\,d(p), \quad p = \min(1, (s - W) / (T - W))

    with W = ``warmup_steps``, T = ``total_steps``, r = ``min_ratio`` and d(p) = 1 (constant), 1 − p (linear) or
    (1 + cos πp) / 2 (cosine).
    """
    if step < warmup_steps:
        return step / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    decay = 1.0 - progress if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
    return min_ratio + (1.0 - min_ratio) * decay


def read_schedule(config, warmup_key="warmup_steps", total_key="scheduler_total_steps"):
    """``(schedule, warmup_steps, min_ratio, total_steps or None)`` from the config, validated; the warmup and total
    steps read from ``warmup_key`` / ``total_key`` (SpecGR++'s stage 2 has its own)."""
    schedule = str(config["lr_scheduler"] or "constant").lower()
    warmup = config[warmup_key] or 0
    min_ratio = config["lr_min_ratio"] if config["lr_min_ratio"] is not None else 0.0
    total = config[total_key]
    if schedule not in SCHEDULES:
        raise ValueError(f"lr_scheduler: expected one of {', '.join(SCHEDULES)}, got {config['lr_scheduler']!r}")
    if not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"{warmup_key}: expected an int >= 0, got {warmup!r}")
    if not isinstance(min_ratio, (int, float)) or not 0.0 <= min_ratio <= 1.0:
        raise ValueError(f"lr_min_ratio: expected a number in [0, 1], got {min_ratio!r}")
    if total is not None and (not isinstance(total, int) or total <= warmup):
        raise ValueError(f"{total_key}: expected an int > {warmup_key} ({warmup}) or ~, got {total!r}")
    return schedule, warmup, float(min_ratio), total


def attach_lr_scheduler(optimizer, schedule, warmup_steps, total_steps, min_ratio=0.0):
    """A :class:`~torch.optim.lr_scheduler.LambdaLR` over ``optimizer`` that advances after each
    ``optimizer.step()``; the learning rate of step s is ``lr · lr_multiplier(s, …)``.

    Returns:
        (LambdaLR, RemovableHandle): the scheduler and the hook handle (``handle.remove()`` detaches it).
    """
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_multiplier(step, warmup_steps, total_steps, schedule, min_ratio)
    )
    handle = optimizer.register_step_post_hook(lambda _optimizer, _args, _kwargs: scheduler.step())
    return scheduler, handle
