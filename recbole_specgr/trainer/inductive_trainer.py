"""
recbole_specgr.trainer.inductive_trainer
########################################
RecBole's :class:`~recbole.trainer.Trainer` with split-aware full-ranking evaluation, a per-step learning-rate
schedule, a learning curve, optional exclusion of history items at evaluation, and atomic checkpoints.
"""

import torch
from tqdm import tqdm

from recbole_specgr import compat  # noqa: F401  (must precede recbole imports)
from recbole.data.interaction import Interaction
from recbole.trainer import Trainer
from recbole.utils import set_color

from recbole_specgr.atomic import atomic_write
from recbole_specgr.compat import load_checkpoint
from recbole_specgr.config import plain_config
from recbole_specgr.trainer.compiled_loss import CompiledLoss
from recbole_specgr.evaluation import EXCLUDED_ITEMS, SplitMetrics, nest_result
from recbole_specgr.trainer.schedule import attach_lr_scheduler, read_schedule


def check_metric(key, metric, topk):
    """Raise a one-line error unless ``metric`` (e.g. ``Recall@50``) is one the evaluation computes for ``topk``."""
    names = [f"{name}@{k}" for name in ("recall", "ndcg") for k in topk]
    bare = str(metric).lower().rpartition("/")[2]
    if bare not in names:
        raise ValueError(f"{key}: {metric!r} is not computed with topk {list(topk)}; expected one of {names} "
                         "(optionally prefixed in_sample/ or unseen/)")


def saved_other_parameters(model):
    """``model.other_parameter()`` without submodules (RecBole's FDSA lists its feature-embedding layer there): their
    weights are in the state dict already, and a pickled module would not load with ``weights_only=True``."""
    return {name: value for name, value in (model.other_parameter() or {}).items()
            if not isinstance(value, torch.nn.Module)}


class InductiveTrainer(Trainer):
    """Evaluates ``model.full_sort_predict`` (``[B, n_items]``, −inf = not recommended) with Recall/NDCG@``topk``
    overall, on in-sample targets and on unseen targets (see :mod:`recbole_specgr.evaluation`).

    A model may expose ``pop_eval_stats() -> dict`` (e.g. SpecGR's acceptance rate); its values are added to the result.

    Training recipe (every model, RecBole's included): ``lr_scheduler`` / ``warmup_steps`` / ``lr_min_ratio`` /
    ``scheduler_total_steps`` (see :mod:`recbole_specgr.trainer.schedule`; a fresh schedule for each optimizer that
    :meth:`fit` starts with) and RecBole's ``clip_grad_norm`` (e.g. ``{max_norm: 1.0}``). The last epoch of a
    :meth:`fit` is always validated, even when ``eval_step`` does not divide the number of epochs.

    ``init_checkpoint``: weights to start from, loaded when the trainer is built — through the model's
    ``load_init_checkpoint(path)`` when it has one (SpecGR++ takes a TIGER's T5), else strictly as a checkpoint of
    the same model. With ``epochs: 0`` this evaluates a trained model as it is (e.g. TIGER_C over TIGER's weights).

    ``learning_curve`` lists one entry per epoch: ``epoch``, optimizer ``step`` (cumulative), ``lr`` at its end,
    ``train_loss`` (a list when the model returns several losses) and, for validated epochs, ``valid``
    (overall / in-sample / unseen). ``eval_exclude_history: True`` removes each row's earlier items from every model's
    ranking (see :mod:`recbole_specgr.evaluation`).
    """

    def __init__(self, config, model):
        super().__init__(config, model)

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
        check_metric("valid_metric", config["valid_metric"], self.topk)
        if config["init_checkpoint"]:
            self.load_init_checkpoint(config["init_checkpoint"])
        if self.device.type == "cpu":
            # Flush subnormal floats to zero: as a model grows confident its softmax tails (attention, the
            # vocabulary) fall below 1e-38, and CPU kernels on subnormals ran a TIGER epoch 7x slower by epoch 4.
            torch.set_flush_denormal(True)

    # ---------------------------------------------------------------- training
    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        """RecBole's loop with this trainer's schedule, then a validation of the last epoch if the loop skipped it."""
        self._attach_schedule(len(train_data))
        n_before = len(self.learning_curve)
        super().fit(train_data, valid_data, verbose=verbose, saved=saved, show_progress=show_progress,
                    callback_fn=callback_fn)
        trained = len(self.learning_curve) > n_before
        if valid_data and self.eval_step > 0 and trained and "valid" not in self.learning_curve[-1]:
            self._validate_final_epoch(self.learning_curve[-1]["epoch"], valid_data, verbose, saved, show_progress)
        if valid_data and not trained and self.best_valid_result is None:  # nothing to train: validate as it is
            self.best_valid_score, self.best_valid_result = super()._valid_epoch(valid_data, show_progress)
        return self.best_valid_score, self.best_valid_result

    def load_init_checkpoint(self, path):
        """Load ``init_checkpoint`` into the model (see the class docstring)."""
        if hasattr(self.model, "load_init_checkpoint"):
            self.model.load_init_checkpoint(path)
            return
        checkpoint = load_checkpoint(path, map_location=self.device)
        try:
            self.model.load_state_dict(checkpoint["state_dict"])
        except RuntimeError as err:
            raise ValueError(f"init_checkpoint: {path} does not fit this {self.config['model']} "
                             f"({str(err).splitlines()[0]})") from None
        self.model.load_other_parameter(checkpoint.get("other_parameter"))
        self.logger.info(f"[TRAIN] starting from {path}")

    def _attach_schedule(self, steps_per_epoch):
        """A fresh schedule for the current optimizer (none for ``constant`` without warmup)."""
        if self._scheduled_optimizer is self.optimizer:
            return
        if self._scheduler_handle is not None:
            self._scheduler_handle.remove()
        name, warmup, min_ratio, total = self.schedule
        self._scheduled_optimizer = self.optimizer
        self.lr_scheduler = self._scheduler_handle = None
        peak = self.optimizer.param_groups[0]["lr"]  # this optimizer's own rate (SpecGR++ stage 2 has another)
        if name == "constant" and warmup == 0:
            return
        total = total or max(1, (self.epochs - self.start_epoch) * steps_per_epoch)
        self.lr_scheduler, self._scheduler_handle = attach_lr_scheduler(self.optimizer, name, warmup, total, min_ratio)
        if self._resumed_scheduler_state is not None:
            self.lr_scheduler.load_state_dict(self._resumed_scheduler_state)
            self._resumed_scheduler_state = None
        self.logger.info(f"[TRAIN] learning rate: {name} schedule, {warmup} warmup steps, decay over {total} steps "
                         f"to {min_ratio:g} × {peak:g}")

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
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
        """Validate the last epoch (RecBole validates only every ``eval_step`` epochs) and keep it if it is best."""
        valid_score, valid_result = self._valid_epoch(valid_data, show_progress=show_progress)
        better = self.best_valid_result is None or (
            valid_score > self.best_valid_score if self.valid_metric_bigger else valid_score < self.best_valid_score
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
        metrics = SplitMetrics(self.topk, dataset.seen_item_mask)
        batches = tqdm(eval_data, total=len(eval_data), ncols=100, desc=set_color("Evaluate   ", "pink")) \
            if show_progress else eval_data
        for interaction, _history_index, _positive_u, _positive_i in batches:
            interaction = self.with_exclusions(interaction, dataset).to(self.device)
            scores = self.model.full_sort_predict(interaction).view(len(interaction), -1).float()  # [B, n_items]
            scores[:, 0] = -torch.inf
            if EXCLUDED_ITEMS in interaction:
                scores[interaction[EXCLUDED_ITEMS]] = -torch.inf
            metrics.add(scores, interaction[self.item_field])
        result = metrics.result()
        if hasattr(self.model, "pop_eval_stats"):
            result.update(self.model.pop_eval_stats())
        return result

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
        checkpoint = load_checkpoint(resume_file, map_location=self.device)
        self.start_epoch = checkpoint["epoch"] + 1
        self.cur_step = checkpoint["cur_step"]
        self.best_valid_score = checkpoint["best_valid_score"]
        self.model.load_state_dict(checkpoint["state_dict"])
        self.model.load_other_parameter(checkpoint.get("other_parameter"))
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self._resumed_scheduler_state = checkpoint.get("lr_scheduler")

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        """RecBole's checkpoint with the configuration as plain data (loads with ``weights_only=True``), written
        through a temporary file so that no half-written file is left behind."""
        saved_model_file = kwargs.pop("saved_model_file", self.saved_model_file)
        state = {
            "config": plain_config(self.config),
            "epoch": epoch,
            "cur_step": self.cur_step,
            "best_valid_score": self.best_valid_score,
            "state_dict": self.model.state_dict(),
            "other_parameter": saved_other_parameters(self.model),
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": None if self.lr_scheduler is None else self.lr_scheduler.state_dict(),
        }
        with atomic_write(saved_model_file) as f:
            torch.save(state, f)  # default protocol: what weights_only loading reads
        if verbose:
            self.logger.info(set_color("Saving current", "blue") + f": {saved_model_file}")
