"""
recbole_specgr.trainer.specgrpp_trainer
#######################################
SpecGR++'s two training stages in one :meth:`SpecGRPPTrainer.fit` call.

Reference:
    Yijie Ding et al. "Inductive Generative Recommendation via Retrieval-based Speculation." arXiv:2410.02939,
    Sections 3.3.2 and 4.1.4.
"""

from recbole_specgr.trainer.inductive_trainer import InductiveTrainer
from recbole_specgr.trainer.threshold_tuning import ThresholdTuningMixin


class SpecGRPPTrainer(ThresholdTuningMixin, InductiveTrainer):
    """Stage 1 (pretraining, ``learning_rate``, ``specgrpp_pretrain_epochs`` epochs, default ``epochs``) then stage 2
    (fine-tuning, a fresh optimizer at ``specgrpp_finetune_learning_rate``, ``specgrpp_finetune_epochs`` epochs), each
    through RecBole's :meth:`~recbole.trainer.Trainer.fit` with early stopping on ``valid_metric``.

    Both stages write the same checkpoint file, and the best validation score carries over from stage 1, so a stage-2
    epoch is saved only when it beats every earlier one: the file ends up holding the best model of the two stages.
    Stage 2 starts from the best stage-1 checkpoint (when checkpoints are saved and there is validation data). Epochs
    are numbered on across the stages. Resuming (``resume_checkpoint``) is not stage-aware. With
    ``specgr_threshold_grid``, γ is then chosen on the validation data with the best checkpoint
    (:class:`~recbole_specgr.trainer.threshold_tuning.ThresholdTuningMixin`).
    """

    def __init__(self, config, model):
        super().__init__(config, model)

        # load parameters info
        pretrain_epochs = config["specgrpp_pretrain_epochs"]
        self.pretrain_epochs = int(self.epochs if pretrain_epochs is None else pretrain_epochs)
        self.finetune_epochs = int(config["specgrpp_finetune_epochs"] or 0)
        self.finetune_learning_rate = float(config["specgrpp_finetune_learning_rate"] or self.learning_rate)
        self.config_eval_step = config["eval_step"]
        if self.pretrain_epochs < 0 or self.finetune_epochs < 0:
            raise ValueError(
                f"specgrpp_pretrain_epochs / specgrpp_finetune_epochs: expected ints >= 0, got "
                f"{self.pretrain_epochs} / {self.finetune_epochs}"
            )

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        """Run both stages.

        Returns:
            (float, dict): the best validation score and result over both stages.
        """
        self.logger.info(f"[SpecGR++] stage 1: pretraining (λ1·L_CL + L_Gen), {self.pretrain_epochs} epochs")
        self._run_stage(0, self.pretrain_epochs, train_data, valid_data, verbose, saved, show_progress, callback_fn)
        if self.finetune_epochs > 0:
            if saved and valid_data and self.best_valid_result is not None:
                self.load_model(self.saved_model_file)
                self.logger.info(f"[SpecGR++] stage 1 best checkpoint reloaded ({self.valid_metric} "
                                 f"{self.best_valid_score:.6f})")
            self.model.start_finetune()
            self.optimizer = self._build_optimizer(learning_rate=self.finetune_learning_rate)
            self.logger.info(
                f"[SpecGR++] stage 2: fine-tuning (λ2·L_CE + L_Gen) against frozen item vectors, "
                f"{self.finetune_epochs} epochs at learning rate {self.finetune_learning_rate}"
            )
            end = self.pretrain_epochs + self.finetune_epochs
            self._run_stage(self.pretrain_epochs, end, train_data, valid_data, verbose, saved, show_progress,
                            callback_fn)
        self.logger.info(f"[SpecGR++] training done; best {self.valid_metric} {self.best_valid_score:.6f}")
        self.tune_threshold(valid_data, load_best_model=saved)
        return self.best_valid_score, self.best_valid_result

    def _run_stage(self, start, end, train_data, valid_data, verbose, saved, show_progress, callback_fn):
        """Epochs ``start … end − 1`` of RecBole's loop with a fresh early-stopping counter."""
        if end <= start:
            return
        self.start_epoch, self.epochs, self.cur_step = start, end, 0
        self.eval_step = min(self.config_eval_step, end - start)
        super().fit(train_data, valid_data, verbose=verbose, saved=saved, show_progress=show_progress,
                    callback_fn=callback_fn)
