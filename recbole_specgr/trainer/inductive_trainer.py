"""
recbole_specgr.trainer.inductive_trainer
########################################
RecBole's :class:`~recbole.trainer.Trainer` with split-aware full-ranking evaluation, a per-step learning-rate
schedule, a learning curve, optional exclusion of history items at evaluation, atomic checkpoints and training that
resumes where a killed process stopped (``progress_file``).
"""

import json
import os
import random
import time
import uuid

import numpy as np
import torch
from tqdm import tqdm

from recbole_specgr import compat  # noqa: F401  (must precede recbole imports)
from recbole.data.interaction import Interaction
from recbole.trainer import Trainer
from recbole.utils import set_color

from recbole_specgr.atomic import atomic_write
from recbole_specgr.compat import load_checkpoint
from recbole_specgr.config import check_same_split, plain_config
from recbole_specgr.trainer.compiled_loss import CompiledLoss
from recbole_specgr.evaluation import (EXCLUDED_ITEMS, SplitMetrics, check_metrics, nest_result,
                                      requested_metrics)
from recbole_specgr.threads import flush_subnormals, map_in_threads
from recbole_specgr.trainer.schedule import attach_lr_scheduler, read_schedule


def load_error(err):
    """The first specific line of a ``load_state_dict`` error (``size mismatch for w: …``, ``Missing key(s) …``),
    not torch's heading ``Error(s) in loading state_dict for …:``."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[1] if len(lines) > 1 and lines[0].startswith("Error(s) in loading") else lines[0] if lines else ""


def saved_other_parameters(model):
    """``model.other_parameter()`` without submodules (RecBole's FDSA lists its feature-embedding layer there): their
    weights are in the state dict already, and a pickled module would not load with ``weights_only=True``."""
    return {name: value for name, value in (model.other_parameter() or {}).items()
            if not isinstance(value, torch.nn.Module)}


def unique_checkpoint_name(path: str) -> str:
    """RecBole's ``<Model>-<time to the second>.pth`` with this process's id added (and a count, for a second trainer
    of the same model in the same second): two runs started in the same second, e.g. the seeds of a benchmark table,
    saved their best models into one file and each evaluated whichever the other had written last."""
    stem, ext = os.path.splitext(path)
    candidate, count = f"{stem}-{os.getpid()}{ext}", 1
    while candidate in _ISSUED_NAMES or os.path.exists(candidate):
        candidate, count = f"{stem}-{os.getpid()}-{count}{ext}", count + 1
    _ISSUED_NAMES.add(candidate)
    return candidate


_ISSUED_NAMES = set()  # checkpoint names given to this process's trainers (a trainer saves only after an epoch)


class InductiveTrainer(Trainer):
    """Evaluates ``model.full_sort_predict`` (``[B, n_items]``, −inf = not recommended) with Recall/NDCG@``topk``
    overall, on in-sample targets and on unseen targets (see :mod:`recbole_specgr.evaluation`).

    A model may expose ``pop_eval_stats() -> dict`` (e.g. SpecGR's acceptance rate); its values are added to the result.

    Training recipe (every model, RecBole's included): ``lr_scheduler`` / ``warmup_steps`` / ``lr_min_ratio`` /
    ``scheduler_total_steps`` (see :mod:`recbole_specgr.trainer.schedule`; a fresh schedule for each optimizer that
    :meth:`fit` starts with) and RecBole's ``clip_grad_norm`` (e.g. ``{max_norm: 1.0}``). The last epoch of a
    :meth:`fit` is always validated, even when ``eval_step`` does not divide the number of epochs.

    ``init_checkpoint``: weights to start from, loaded when the trainer is built — through the model's
    ``load_init_checkpoint(path, checkpoint)`` (the file as read) when it has one (SpecGR++ takes a TIGER's T5), else
    strictly as a checkpoint of the same model. With ``epochs: 0`` this evaluates a trained model as it is (e.g. TIGER_C over TIGER's weights).

    ``progress_file``: a file the trainer rewrites after every epoch of :meth:`fit` (weights, optimizer and schedule,
    early-stopping state, learning curve, the random states of torch, numpy, Python and the training loader) and
    once more when :meth:`fit` ends. A :meth:`fit` that finds it continues from the epoch after the one it records,
    and gives exactly the weights an uninterrupted run would have (CPU); one that finds it finished trains nothing.
    For runs longer than a session (``benchmarks/run_table.py`` sets it per run and deletes it with the result).

    ``learning_curve`` lists one entry per epoch: ``epoch``, optimizer ``step`` (cumulative), ``lr`` at its end,
    ``train_loss`` (a list when the model returns several losses) and, for validated epochs, ``valid``
    (overall / in-sample / unseen). ``eval_exclude_history: True`` removes each row's earlier items from every model's
    ranking (see :mod:`recbole_specgr.evaluation`).
    """

    def __init__(self, config, model):
        super().__init__(config, model)
        self.tensorboard.close()  # reopened by its first write: a constructor that fails leaves no writer thread
        self.saved_model_file = unique_checkpoint_name(self.saved_model_file)

        # load parameters info
        self.topk = list(config["topk"])
        self.item_field = config["ITEM_ID_FIELD"]
        self.schedule = read_schedule(config)  # (name, warmup_steps, min_ratio, total_steps or None)
        self.exclude_history = bool(config["eval_exclude_history"])
        self.learning_curve = []
        self.compiled_loss = (CompiledLoss(model.calculate_loss, f"{config['model']}.calculate_loss")
                              if config["torch_compile"] else None)
        self.global_step = 0  # optimizer steps over every fit() of this trainer
        self.lr_scheduler = None
        self._scheduled_optimizer = None  # the optimizer lr_scheduler drives
        self._scheduler_handle = None
        self._resumed_scheduler_state = None
        self.progress_file = config["progress_file"]
        self.resumed_train_time_s = 0.0  # training time of the processes before this one (progress_file)
        self._progress_read = None  # (file stamp, state) read by progress_stage, for _resume_progress to reuse
        self._clock = None  # when this process started training
        self._writer = uuid.uuid4().hex  # marks the progress this trainer writes: reading it back is no resume
        self._fit_first_epoch = 0  # the epoch the current fit started at, in the first process (the schedule's start)
        self._progress_loader = None  # the training loader while fit() writes progress
        self.metrics = requested_metrics(config["metrics"])  # reported and selected by: recall and/or ndcg
        check_metrics([("valid_metric", config["valid_metric"], "")], self.metrics, self.topk)
        if config["init_checkpoint"]:
            self.load_init_checkpoint(config["init_checkpoint"])
        self.eval_workers = config["eval_workers"]  # None: as many as torch has threads (on a CPU)
        if self.device.type == "cpu":
            flush_subnormals()

    # ---------------------------------------------------------------- training
    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        """RecBole's loop with this trainer's schedule, then a validation of the last epoch if the loop skipped it;
        continued from ``progress_file`` when it holds this stage's progress. The tensorboard writer is closed at the
        end (RecBole never closes it, and its flushing thread can outlive the run's folder; a later write reopens it).
        Subclasses with another training procedure override :meth:`_fit`, so that this holds for them too; the
        training clock (``train_time_s`` of the progress file) starts here at the latest, before any subclass's ``_fit``
        steps (S3Rec's ``fit`` starts it before its pre-training)."""
        self._start_clock()
        try:
            return self._fit(train_data, valid_data, verbose, saved, show_progress, callback_fn)
        finally:
            self.tensorboard.close()

    def _start_clock(self):
        """Start the training clock of this process (once): ``train_time_s`` counts from here."""
        if self._clock is None:
            self._clock = time.perf_counter()

    def _fit(self, train_data, valid_data, verbose, saved, show_progress, callback_fn):
        if self.progress_file:
            if not saved:
                raise ValueError("progress_file: resuming needs the best checkpoint on disk; fit(saved=False) "
                                 "writes none")
            resumed = self._resume_progress(train_data)
            self._progress_read = None  # another stage's progress, kept by progress_stage: not needed any more
            if resumed == "done":
                return self.best_valid_score, self.best_valid_result
        self._fit_first_epoch = self._schedule_start()
        self._attach_schedule(len(train_data))
        n_before = len(self.learning_curve)
        self._progress_loader = train_data if self.progress_file else None
        try:
            super().fit(train_data, valid_data, verbose=verbose, saved=saved, show_progress=show_progress,
                        callback_fn=callback_fn)
        finally:
            self._progress_loader = None
        trained = len(self.learning_curve) > n_before
        if valid_data and self.eval_step > 0 and trained and "valid" not in self.learning_curve[-1]:
            self._validate_final_epoch(self.learning_curve[-1]["epoch"], valid_data, verbose, saved, show_progress)
        if valid_data and not trained and self.best_valid_result is None:  # nothing to train: validate as it is
            self.best_valid_score, self.best_valid_result = super()._valid_epoch(valid_data, show_progress)
        if self.progress_file:
            last = self.learning_curve[-1]["epoch"] if trained else self.start_epoch - 1
            self._write_progress(last, train_data, done=True)
        return self.best_valid_score, self.best_valid_result

    def load_init_checkpoint(self, path):
        """Load ``init_checkpoint`` into the model (see the class docstring), once it is known to come from this run's
        split (:func:`~recbole_specgr.config.check_same_split`)."""
        checkpoint = load_checkpoint(path, map_location=self.device)
        check_same_split("init_checkpoint", path, checkpoint, self.config, getattr(self.model, "seen_item_mask", None))
        if hasattr(self.model, "load_init_checkpoint"):
            self.model.load_init_checkpoint(path, checkpoint)
            return
        try:
            self.model.load_state_dict(checkpoint["state_dict"])
        except RuntimeError as err:
            raise ValueError(f"init_checkpoint: {path} does not fit this {self.config['model']} "
                             f"({load_error(err)})") from None
        self.model.load_other_parameter(checkpoint.get("other_parameter"))
        self.logger.info(f"[TRAIN] starting from {path}")

    def _schedule_start(self):
        """The epoch the current optimizer's schedule started at: the one restored with it (``resume_checkpoint``,
        ``progress_file``; the schedule's length counts from there), else this fit's first epoch."""
        resumed_for, _, first_epoch = self._resumed_scheduler_state or (None, None, None)
        return first_epoch if resumed_for is self.optimizer and first_epoch is not None else self.start_epoch

    def _stage_schedule(self):
        """``(name, warmup_steps, min_ratio, total_steps or None)`` of the schedule :meth:`fit` attaches."""
        return self.schedule

    def _attach_schedule(self, steps_per_epoch):
        """A fresh schedule for the current optimizer (none for ``constant`` without warmup)."""
        if self._scheduled_optimizer is self.optimizer:
            return
        if self._scheduler_handle is not None:
            self._scheduler_handle.remove()
        name, warmup, min_ratio, total = self._stage_schedule()
        self._scheduled_optimizer = self.optimizer
        self.lr_scheduler = self._scheduler_handle = None
        if name == "constant" and warmup == 0:
            return
        total = total or max(1, (self.epochs - self._fit_first_epoch) * steps_per_epoch)
        self.lr_scheduler, self._scheduler_handle = attach_lr_scheduler(self.optimizer, name, warmup, total, min_ratio)
        resumed_for, resumed_state, _ = self._resumed_scheduler_state or (None, None, None)
        self._resumed_scheduler_state = None
        if resumed_for is self.optimizer and resumed_state is not None:
            self.lr_scheduler.load_state_dict(resumed_state)
            for group, lr in zip(self.optimizer.param_groups, self.lr_scheduler.get_last_lr()):
                group["lr"] = lr  # building the scheduler reset it to the rate of step 0
        peak = self.lr_scheduler.base_lrs[0]  # this optimizer's own rate (SpecGR++ stage 2 has another), also resumed
        self.logger.info(f"[TRAIN] learning rate: {name} schedule, {warmup} warmup steps, decay over {total} steps "
                         f"to {min_ratio:g} × {peak:g}")
        if warmup >= total:
            self.logger.warning(f"[TRAIN] {warmup} warmup steps >= the {total} steps of this schedule: the learning "
                                f"rate never reaches {peak:g}; lower warmup_steps (SpecGR++'s stage 2: "
                                f"specgrpp_finetune_warmup_steps) or train more steps")

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        self._epoch_starts(epoch_idx)
        loss_func = loss_func or self.compiled_loss
        loss = super()._train_epoch(train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress)
        self.global_step += len(train_data)
        self.learning_curve.append({
            "epoch": epoch_idx,
            "step": self.global_step,
            "lr": self.optimizer.param_groups[0]["lr"],
            "train_loss": list(loss) if isinstance(loss, tuple) else loss,
        })
        return loss

    def _epoch_starts(self, epoch_idx):
        """Inside :meth:`fit` with ``progress_file``: record the progress up to the epoch before (trained, validated
        and judged by early stopping) — the state an interrupted run continues from."""
        if self._progress_loader is not None and epoch_idx > self.start_epoch:
            self._write_progress(epoch_idx - 1, self._progress_loader)

    def _valid_epoch(self, valid_data, show_progress=False):
        valid_score, valid_result = super()._valid_epoch(valid_data, show_progress=show_progress)
        self._record_validation(valid_score, valid_result)
        return valid_score, valid_result

    def _record_validation(self, valid_score, valid_result, key="valid", **extra):
        """Attach a validation to the learning curve's last epoch, under ``key`` (plus ``extra`` entries), and write
        its metrics by subset to RecBole's TensorBoard writer (``<key>/<subset>/<metric>``, x = optimizer step)."""
        if self.learning_curve:
            nested = nest_result(valid_result)
            self.learning_curve[-1].update({key: nested, f"{key}_score": valid_score,
                                            f"{key}_metric": self.valid_metric, **extra})
            step = self.learning_curve[-1].get("step", self.learning_curve[-1].get("epoch", 0))
            for subset in ("overall", "in_sample", "unseen"):
                for metric, value in (nested.get(subset) or {}).items():
                    if metric != "n_cases" and isinstance(value, float) and value == value:  # NaN: empty subset
                        self.tensorboard.add_scalar(f"{key}/{subset}/{metric}", value, step)

    def _validate_final_epoch(self, epoch_idx, valid_data, verbose, saved, show_progress):
        """Validate the last epoch (RecBole validates only every ``eval_step`` epochs) and keep it if it is best; a tie
        keeps it too, as RecBole's early stopping does (so ``eval_step`` does not decide which of two equal epochs is
        tested)."""
        valid_score, valid_result = self._valid_epoch(valid_data, show_progress=show_progress)
        better = self.best_valid_result is None or (
            valid_score >= self.best_valid_score if self.valid_metric_bigger else valid_score <= self.best_valid_score
        )
        if verbose:
            self.logger.info(set_color(f"epoch {epoch_idx} (last) evaluating", "green")
                             + f" [valid_score: {valid_score:f}]")
        if better:
            self.best_valid_score, self.best_valid_result = valid_score, valid_result
            if saved:
                self._save_checkpoint(epoch_idx, verbose=verbose)

    @torch.no_grad()
    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if not eval_data:
            return None
        if load_best_model:
            self.load_model(model_file or self.saved_model_file)
        self.model.eval()
        dataset = eval_data._dataset
        metrics = SplitMetrics(self.topk, dataset.seen_item_mask, self.metrics)

        def predict(batch):
            interaction = self.with_exclusions(batch[0], dataset).to(self.device)
            scores = self.model.full_sort_predict(interaction).view(len(interaction), -1).float()  # [B, n_items]
            scores[:, 0] = -torch.inf
            if EXCLUDED_ITEMS in interaction:
                scores[interaction[EXCLUDED_ITEMS]] = -torch.inf
            return scores, interaction[self.item_field]

        results = self.eval_batches(predict, eval_data)
        if show_progress:  # a batch counts when its result is in
            results = tqdm(results, total=len(eval_data), ncols=100, desc=set_color("Evaluate   ", "pink"))
        for scores, targets in results:
            metrics.add(scores, targets)
        result = metrics.result()
        if hasattr(self.model, "pop_eval_stats"):
            result.update(self.model.pop_eval_stats())
        return result

    def eval_batches(self, predict, eval_data):
        """``predict(batch)`` for each batch of ``eval_data``, in order; on a CPU ``eval_workers`` batches at a time,
        each on its share of torch's threads (:func:`~recbole_specgr.threads.map_in_threads`: the same results as
        one at a time on that many threads). ``predict`` may run in another thread: it must not change the trainer."""
        threads = torch.get_num_threads()
        workers = 1 if self.device.type != "cpu" else min(self.eval_workers or threads, len(eval_data))
        return map_in_threads(predict, eval_data, workers, threads_each=max(1, threads // max(workers, 1)))

    def with_exclusions(self, interaction, dataset):
        """``interaction`` plus :data:`~recbole_specgr.evaluation.EXCLUDED_ITEMS` (the rows' history items) when
        ``eval_exclude_history`` is on."""
        if self.exclude_history:
            interaction.update(Interaction({EXCLUDED_ITEMS: dataset.history_mask(interaction)}))
        return interaction

    def load_model(self, checkpoint_file):
        """Load a checkpoint written by :meth:`_save_checkpoint` (tensors and plain data only)."""
        checkpoint = load_checkpoint(checkpoint_file, map_location=self.device)
        self.model.load_state_dict(checkpoint["state_dict"])
        self.model.load_other_parameter(checkpoint.get("other_parameter"))
        self.logger.info(f"Loading model structure and parameters from {checkpoint_file}")

    def resume_checkpoint(self, resume_file):
        """Continue from a checkpoint of :meth:`_save_checkpoint` (RecBole's API) or a ``progress_file``."""
        self._restore(load_checkpoint(resume_file, map_location=self.device), "resume_file", resume_file)

    def _restore(self, checkpoint, key, path):
        """Continue from ``checkpoint``, read from ``path`` (the value of the setting or argument ``key``)."""
        self.start_epoch = checkpoint["epoch"] + 1
        self.cur_step = checkpoint["cur_step"]
        self.best_valid_score = checkpoint["best_valid_score"]
        try:
            self.model.load_state_dict(checkpoint["state_dict"])
            self.optimizer.load_state_dict(checkpoint["optimizer"])
        except (RuntimeError, ValueError) as err:  # a model of other sizes (hidden_size, layers, …)
            raise ValueError(f"{key}: {path} does not fit this {self.config['model']} ({load_error(err)}); delete "
                             f"it to start over or give another path") from None
        self.model.load_other_parameter(checkpoint.get("other_parameter"))
        older = checkpoint.get("progress") or {}  # progress files written before e954148 kept these two there
        self.global_step = checkpoint.get("global_step", older.get("global_step", self.global_step))
        # the schedule's state and first epoch belong to this optimizer: a stage that builds its own (SpecGR++'s
        # stage 2 after a resumed, finished stage 1) starts its own schedule
        self._resumed_scheduler_state = (self.optimizer, checkpoint.get("lr_scheduler"),
                                         checkpoint.get("fit_first_epoch", older.get("fit_first_epoch")))

    def _checkpoint_state(self, epoch):
        return {
            "config": plain_config(self.config),
            "epoch": epoch,
            "cur_step": self.cur_step,
            "best_valid_score": float(self.best_valid_score),
            "state_dict": self.model.state_dict(),
            "other_parameter": saved_other_parameters(self.model),
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": None if self.lr_scheduler is None else self.lr_scheduler.state_dict(),
            "fit_first_epoch": self._fit_first_epoch,
            "global_step": self.global_step,
        }

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        """RecBole's checkpoint with the configuration as plain data (loads with ``weights_only=True``), written
        through a temporary file so that no half-written file is left behind."""
        saved_model_file = kwargs.pop("saved_model_file", self.saved_model_file)
        with atomic_write(saved_model_file) as f:
            torch.save(self._checkpoint_state(epoch), f)  # default protocol: what weights_only loading reads
        if verbose:
            self.logger.info(set_color("Saving current", "blue") + f": {saved_model_file}")

    # ---------------------------------------------------------------- progress (resuming a killed run)
    def progress_stage(self):
        """The training stage ``progress_file`` records (``"train"`` for a one-stage trainer, SpecGR++'s
        ``"pretrain"`` / ``"finetune"``), None without one. Multi-stage trainers skip the stages it shows finished."""
        if not (self.progress_file and os.path.exists(self.progress_file)):
            return None
        stamp = _file_stamp(self.progress_file)
        state = self._read_progress_file()
        self._progress_read = (stamp, state)
        return state["progress"]["stage"]

    def _stage_name(self):
        return getattr(self, "stage", None) or "train"

    def _read_progress_file(self):
        """The checked contents of ``progress_file`` (those :meth:`progress_stage` read, if the file is unchanged)."""
        path = self.progress_file
        kept, self._progress_read = self._progress_read, None
        if kept is not None and kept[0] == _file_stamp(path):
            return kept[1]
        state = load_checkpoint(path, map_location="cpu")
        meta = state.get("progress") if isinstance(state, dict) else None
        if meta is None:
            raise ValueError(f"progress_file: {path} is not a progress file (no 'progress' entry); give another path")
        for key in ("model", "dataset", "seed"):
            if meta[key] != self.config[key]:
                raise ValueError(f"progress_file: {path} is the progress of a run with {key} = {meta[key]!r}, this "
                                 f"run has {self.config[key]!r}; delete it to start over or give another path")
        # another split's weights were trained on rows of this run's valid / test period
        check_same_split("progress_file", path, state, self.config, getattr(self.model, "seen_item_mask", None),
                         remedy="delete it to start over or give another path")
        return state

    def _resume_progress(self, train_data):
        """Load ``progress_file`` if it holds this stage's progress: ``"done"`` (the stage had finished),
        ``"resumed"``, or None (no file, or another stage's)."""
        if not os.path.exists(self.progress_file):
            return None
        state = self._read_progress_file()
        meta = state["progress"]
        if meta["stage"] != self._stage_name():  # another stage's (SpecGR++'s finished stage 1): start this one
            return None
        best_file = meta["saved_model_file"]
        if meta["best_valid_result"] is not None and not os.path.exists(best_file):
            raise ValueError(f"progress_file: {self.progress_file} continues a run whose best checkpoint "
                             f"{best_file} is gone; delete the progress file to start over")
        self._restore(state, "progress_file", self.progress_file)
        self.saved_model_file = best_file
        self.best_valid_result = json.loads(meta["best_valid_result"]) if meta["best_valid_result"] else None
        self.learning_curve = json.loads(meta["learning_curve"])
        if meta.get("writer") != self._writer:  # another process's progress (not this trainer's own, read back when
            self.resumed_train_time_s = meta["train_time_s"]  # SpecGR++ enters stage 2): its time, then this one's
            self._clock = time.perf_counter()
        rng = state["rng"]
        torch.set_rng_state(rng["torch"].cpu())
        np.random.set_state(("MT19937", rng["numpy_key"].numpy().astype(np.uint32), *rng["numpy_rest"]))
        random.setstate((rng["python"][0], tuple(rng["python"][1]), rng["python"][2]))
        if rng["loader"] is not None and hasattr(train_data, "generator"):
            train_data.generator.set_state(rng["loader"].cpu())
        self.logger.info(set_color(f"[TRAIN] resumed from {self.progress_file}: epoch {self.start_epoch}"
                                   + (" (finished)" if meta["done"] else ""), "blue"))
        return "done" if meta["done"] else "resumed"

    def _write_progress(self, epoch, train_data, done=False):
        """Everything :meth:`_resume_progress` needs to continue after ``epoch`` (atomically replaced)."""
        state = self._checkpoint_state(epoch)
        _, key, *rest = np.random.get_state()
        state["rng"] = {
            "torch": torch.get_rng_state(),
            "numpy_key": torch.from_numpy(key.astype(np.int64)),
            "numpy_rest": [int(rest[0]), int(rest[1]), float(rest[2])],
            "python": random.getstate(),
            "loader": train_data.generator.get_state() if hasattr(train_data, "generator") else None,
        }
        state["progress"] = {
            "stage": self._stage_name(),
            "writer": self._writer,
            "done": done,
            "model": self.config["model"],
            "dataset": self.config["dataset"],
            "seed": self.config["seed"],
            "saved_model_file": self.saved_model_file,
            "best_valid_result": None if self.best_valid_result is None else json.dumps(self.best_valid_result,
                                                                                       default=_plain),
            "learning_curve": json.dumps(self.learning_curve, default=_plain),
            "train_time_s": self.resumed_train_time_s + time.perf_counter() - self._clock,
        }
        with atomic_write(self.progress_file) as f:
            torch.save(state, f)


def _file_stamp(path):
    """What identifies one version of a file: path, inode (atomic_write replaces it), size, modification time."""
    st = os.stat(path)
    return path, st.st_ino, st.st_size, st.st_mtime_ns


def _plain(value):
    """JSON for numpy / torch scalars in results and curves."""
    return value.item() if hasattr(value, "item") else str(value)
