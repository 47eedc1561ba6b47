"""
recbole_specgr.trainer.specgrpp_trainer
#######################################
SpecGR++'s two training stages in one :meth:`SpecGRPPTrainer.fit` call, each validated by the metric of what it
trains.

Reference:
    Yijie Ding et al. "Inductive Generative Recommendation via Retrieval-based Speculation." arXiv:2410.02939,
    Sections 3.3.2 and 4.1.4.
"""

from recbole_specgr.evaluation import nest_result
from recbole_specgr.evaluation import check_metrics
from recbole_specgr.trainer.inductive_trainer import InductiveTrainer
from recbole_specgr.trainer.schedule import read_schedule
from recbole_specgr.trainer.threshold_tuning import ThresholdTuningMixin


class SpecGRPPTrainer(ThresholdTuningMixin, InductiveTrainer):
    """Stage 1 (pretraining, λ1·L_CL + L_Gen at ``learning_rate`` for ``specgrpp_pretrain_epochs`` epochs, default
    ``epochs``), then stage 2 (fine-tuning, λ2·L_CE + L_Gen, a fresh optimizer and schedule at
    ``specgrpp_finetune_learning_rate`` for ``specgrpp_finetune_epochs`` epochs, warming up over
    ``specgrpp_finetune_warmup_steps`` and decaying over ``specgrpp_finetune_total_steps``, ~ = its own steps), each
    through RecBole's :meth:`~recbole.trainer.Trainer.fit` with its own early stopping. Every stage is validated at
    its last epoch.

    Selection (what each stage trains decides what it is validated by):

    - stage 1 trains the drafter: validated by the drafter's own full ranking (``eval_role = "drafter"``) on
      ``specgrpp_pretrain_valid_metric`` (default ``valid_metric``: recall@50, as the reference selects the
      contrastive stage); with λ1 = 0 (no L_CL: the drafter is not trained) by speculative inference on
      ``valid_metric`` instead;
    - stage 2 (and the final model) is validated by speculative inference on ``valid_metric``. With
      ``specgr_threshold_grid`` every such validation evaluates the whole γ grid in one pass and scores the best γ,
      so the checkpoint and γ are chosen together on validation. The best stage-1 checkpoint is validated this way
      first, and a stage-2 epoch is kept only if it scores at least as high (a tie keeps the later epoch, as RecBole's
      early stopping does). Without stage 2, the stage-1 best gets that one pass.

    Both stages write the same checkpoint file, which ends up holding the selected model. ``init_checkpoint``
    (see :class:`InductiveTrainer`) starts stage 1 from a trained TIGER. ``progress_file`` records the stage, so a
    resumed run skips a finished stage 1 (``resume_checkpoint``, RecBole's one-file resume, is not stage-aware).
    """

    def __init__(self, config, model):
        super().__init__(config, model)

        # load parameters info
        pretrain_epochs = config["specgrpp_pretrain_epochs"]
        self.pretrain_epochs = int(self.epochs if pretrain_epochs is None else pretrain_epochs)
        self.finetune_epochs = int(config["specgrpp_finetune_epochs"] or 0)
        finetune_rate = config["specgrpp_finetune_learning_rate"]  # ~: stage 1's (a 0 is refused by the Config)
        self.finetune_learning_rate = float(self.learning_rate if finetune_rate is None else finetune_rate)
        self.finetune_schedule = read_schedule(config, warmup_key="specgrpp_finetune_warmup_steps",
                                               total_key="specgrpp_finetune_total_steps")
        self.pretrain_valid_metric = str(config["specgrpp_pretrain_valid_metric"] or self.valid_metric).lower()
        self.final_valid_metric = self.valid_metric
        check_metrics([("specgrpp_pretrain_valid_metric", self.pretrain_valid_metric, "")], self.metrics, self.topk)
        self.config_eval_step = config["eval_step"]
        self.stage = None  # "pretrain" / "finetune" while training
        self._sweep = None  # γ sweep rows of the latest speculative validation of the weights in memory
        self._saved_sweep = None  # those of the weights last saved to the checkpoint file
        if self.pretrain_epochs < 0 or self.finetune_epochs < 0:
            raise ValueError(
                f"specgrpp_pretrain_epochs / specgrpp_finetune_epochs: expected ints >= 0, got "
                f"{self.pretrain_epochs} / {self.finetune_epochs}"
            )

    def _fit(self, train_data, valid_data, verbose, saved, show_progress, callback_fn):
        """:meth:`fit`: run both stages; returns the selected model's validation score and result (speculative
        inference). With ``progress_file`` a finished stage 1 is not repeated and an interrupted stage continues."""
        in_finetune = self.progress_stage() == "finetune"  # a resumed run already past stage 1
        if not in_finetune:
            # λ1 = 0 (the paper's ablations 2.1 / 2.2) leaves the drafter untrained: its ranking would pick an
            # arbitrary epoch, so stage 1 is then validated by speculative inference instead
            role, metric = (("drafter", self.pretrain_valid_metric) if self.model.lambda_cl > 0
                            else ("speculative", self.final_valid_metric))
            self.logger.info(f"[SpecGR++] stage 1: pretraining (λ1·L_CL + L_Gen), {self.pretrain_epochs} epochs, "
                             f"validated by {'the drafter' if role == 'drafter' else 'speculative inference'}'s "
                             f"{metric}")
            self._enter_stage("pretrain", role, metric)
            self._run_stage(0, self.pretrain_epochs, train_data, valid_data, verbose, saved, show_progress,
                            callback_fn)
            selected = saved and valid_data and self.best_valid_result is not None
            if selected:
                self.load_model(self.saved_model_file)
                self.logger.info(f"[SpecGR++] stage 1 best checkpoint reloaded ({role} {metric} "
                                 f"{self.best_valid_score:.6f})")
        self._enter_stage("finetune", "speculative", self.final_valid_metric)
        if valid_data and not in_finetune:  # the speculative baseline every stage-2 epoch must beat
            if not self.learning_curve:  # no stage-1 epoch (init_checkpoint): the curve starts with the weights loaded
                self.learning_curve.append({"epoch": self.pretrain_epochs - 1, "step": self.global_step, "lr": None,
                                            "train_loss": None, "stage": "init_checkpoint"})
            self.best_valid_score, self.best_valid_result = self._valid_epoch(valid_data, show_progress)
            self.logger.info(f"[SpecGR++] stage-1 model, speculative {self.valid_metric} {self.best_valid_score:.6f}")
        if self.finetune_epochs > 0:
            self.model.start_finetune()
            self.optimizer = self._build_optimizer(learning_rate=self.finetune_learning_rate)
            self.logger.info(
                f"[SpecGR++] stage 2: fine-tuning (λ2·L_CE + L_Gen) against frozen item vectors, "
                f"{self.finetune_epochs} epochs at learning rate {self.finetune_learning_rate}"
            )
            if saved and not in_finetune:
                self._save_checkpoint(self.pretrain_epochs - 1, verbose=verbose)  # the baseline, item tower on
                if self.progress_file:
                    self._write_stage2_start(train_data)
            end = self.pretrain_epochs + self.finetune_epochs
            self._run_stage(self.pretrain_epochs, end, train_data, valid_data, verbose, saved, show_progress,
                            callback_fn, keep_best=True)
            if saved and valid_data:
                self.load_model(self.saved_model_file)
                self._sweep = self._saved_sweep
        self.stage = None
        if self.threshold_grid is not None and valid_data:
            rows = self._sweep
            if rows is None:  # (a resumed stage 2 keeps no sweep rows of the processes before)
                self.tune_threshold(valid_data)
            else:
                self.best_valid_result = self.use_threshold(rows)
                self.best_valid_score = self.best_valid_result[self.valid_metric]  # without the floors' −1 penalty
            if saved:
                self.save_chosen_setting()
        self.logger.info(f"[SpecGR++] training done; best {self.valid_metric} {self.best_valid_score:.6f}")
        return self.best_valid_score, self.best_valid_result

    def _write_stage2_start(self, train_data):
        """Progress at the start of stage 2 (the baseline just saved, a fresh optimizer, no schedule yet): a run killed
        after stage 2's first better epoch overwrote the checkpoint file, but before the next epoch recorded its
        progress, then continues stage 2 from here instead of reloading that file as the stage-1 best."""
        self.lr_scheduler = None  # stage 1's (on its own optimizer): stage 2 attaches its own when it starts
        self.cur_step, self._fit_first_epoch = 0, self.pretrain_epochs
        self._write_progress(self.pretrain_epochs - 1, train_data)

    def _stage_schedule(self):
        """Stage 2 warms up and decays over its own steps (``specgrpp_finetune_*``), not stage 1's."""
        return self.finetune_schedule if self.stage == "finetune" else self.schedule

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        """Also keep the γ sweep of the saved weights' validation: the one the final γ is chosen from (an epoch of
        equal score replaces the checkpoint, RecBole's early stopping keeping the later of equals)."""
        super()._save_checkpoint(epoch, verbose=verbose, **kwargs)
        self._saved_sweep = self._sweep

    def _enter_stage(self, stage, eval_role, valid_metric):
        self.stage = stage
        self.model.eval_role = eval_role
        self.valid_metric = valid_metric
        self.best_valid_score, self.best_valid_result = -float("inf"), None

    def _run_stage(self, start, end, train_data, valid_data, verbose, saved, show_progress, callback_fn,
                   keep_best=False):
        """Epochs ``start … end − 1`` of RecBole's loop with a fresh early-stopping counter (and a fresh best score
        unless ``keep_best``)."""
        if end <= start:
            return
        self.start_epoch, self.epochs, self.cur_step = start, end, 0
        self.eval_step = min(self.config_eval_step, end - start)
        if not keep_best:
            self.best_valid_score, self.best_valid_result = -float("inf"), None
        super()._fit(train_data, valid_data, verbose, saved, show_progress, callback_fn)

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        loss = super()._train_epoch(train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress)
        self.learning_curve[-1]["stage"] = self.stage
        return loss

    def _valid_epoch(self, valid_data, show_progress=False):
        """Stage 1: the drafter's ranking; afterwards speculative inference, over the γ grid when there is one. The
        speculative validation of the stage-1 model goes into the curve as ``valid_speculative`` (of an entry of stage
        ``init_checkpoint`` when no stage-1 epoch ran: the weights of ``init_checkpoint``); stage 2 also trains
        the drafter, so its validations add the drafter's own ranking as ``valid_drafter`` (one cheap pass)."""
        if self.stage == "pretrain":
            return super()._valid_epoch(valid_data, show_progress=show_progress)
        key = "valid_speculative" if self.learning_curve and \
            self.learning_curve[-1].get("stage") in ("pretrain", "init_checkpoint") else "valid"
        if self.threshold_grid is None:
            score, result = self._speculative_validation(valid_data, key, show_progress)
        else:
            score, result, rows = self.sweep_validation(valid_data)
            self._sweep = rows
            self._record_validation(score, result, key=key, **{f"{key}_sweep": rows})
        if key == "valid" and self.learning_curve:
            self.learning_curve[-1]["valid_drafter"] = nest_result(self._drafter_result(valid_data))
        return score, result

    def _speculative_validation(self, valid_data, key, show_progress):
        result = self.evaluate(valid_data, load_best_model=False, show_progress=show_progress)
        self._record_validation(result[self.valid_metric], result, key=key)
        return result[self.valid_metric], result

    def _drafter_result(self, valid_data):
        """The drafter's own full ranking on ``valid_data`` (``eval_role = "drafter"``), metrics as keys."""
        self.model.eval_role = "drafter"
        try:
            return self.evaluate(valid_data, load_best_model=False)
        finally:
            self.model.eval_role = "speculative"

