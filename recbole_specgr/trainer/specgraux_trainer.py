"""
recbole_specgr.trainer.specgraux_trainer
########################################
SpecGR_Aux: train the components that did not come from a checkpoint, then evaluate the composition.

Reference:
    Yijie Ding et al. "Inductive Generative Recommendation via Retrieval-based Speculation." arXiv:2410.02939,
    Section 3.3.1.
"""

from recbole_specgr.trainer.inductive_trainer import InductiveTrainer
from recbole_specgr.trainer.threshold_tuning import ThresholdTuningMixin


class SpecGRAuxTrainer(ThresholdTuningMixin, InductiveTrainer):
    """:meth:`fit` trains each untrained component of :class:`~recbole_specgr.model.sequential_recommender.specgraux.
    SpecGRAux` with the trainer its own model name selects (its own config: learning rate, epochs, early stopping on
    its own validation metric, its own checkpoint file) on this run's dataloaders, keeps each component's best
    checkpoint, then evaluates the composition on the validation data once (once per γ of
    ``specgr_threshold_grid``, keeping the best) and saves it as this run's checkpoint.
    """

    def _fit(self, train_data, valid_data, verbose, saved, show_progress, callback_fn):
        """:meth:`fit` (which closes the tensorboard writer after it). Returns:
            (float, dict): the composition's validation score and result (``(-inf, None)`` without validation data).
        """
        from recbole_specgr.utils import get_trainer

        for role, component, conf in self.model.untrained_components():
            self.logger.info(f"[SpecGR_Aux] training the {role} ({conf['model']}) from its own defaults")
            trainer = get_trainer(conf["MODEL_TYPE"], conf["model"])(conf, component)
            trainer.fit(train_data, valid_data, verbose=verbose, saved=saved, show_progress=show_progress)
            if saved and valid_data:
                trainer.load_model(trainer.saved_model_file)  # its best epoch
            self.logger.info(f"[SpecGR_Aux] {role} done" + (f": {trainer.saved_model_file}" if saved else ""))
        self.model.weights_changed()
        if valid_data:
            self.logger.info("[SpecGR_Aux] evaluating the composition on the validation data")
            if self.tune_threshold(valid_data) is None:
                self.best_valid_result = self.evaluate(valid_data, load_best_model=False, show_progress=show_progress)
                self.best_valid_score = self.best_valid_result[self.valid_metric]
        if saved:
            self._save_checkpoint(0, verbose=verbose)
            self.save_chosen_setting()
        return self.best_valid_score, self.best_valid_result
