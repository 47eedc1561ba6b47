"""
recbole_specgr.trainer.s3rec_trainer
####################################
Both stages of RecBole's S3Rec in one :meth:`S3RecTrainer.fit` call, on one model object.

Reference:
    Kun Zhou, Hui Wang et al. "S3-Rec: Self-Supervised Learning for Sequential Recommendation with Mutual
    Information Maximization." CIKM 2020.

RecBole runs S3Rec as two processes (``train_stage: pretrain`` saves a checkpoint, ``train_stage: finetune`` builds a
new model that loads it). Here the model is built in the ``pretrain`` stage, trained for ``pretrain_epochs`` epochs on
the four self-supervised losses (AAP, MIP, MAP, SP), switched to the ``finetune`` stage and then trained on next-item
prediction by :class:`InductiveTrainer` with early stopping on validation. A model built with ``train_stage:
finetune`` (it has loaded ``pre_model_path`` itself) is only fine-tuned.
"""

from time import time

from torch import nn

from recbole_specgr import compat  # noqa: F401  (must precede recbole imports)
from recbole.model.loss import BPRLoss

from recbole_specgr.trainer.inductive_trainer import InductiveTrainer

_STAGES = ("pretrain", "finetune")


class S3RecTrainer(InductiveTrainer):
    """Pre-trains then fine-tunes RecBole's :class:`~recbole.model.sequential_recommender.S3Rec`.

    The fine-tuning stage starts with a fresh optimizer (as RecBole's two-run recipe does). The stage switch sets the
    two attributes RecBole's S3Rec reads in ``calculate_loss``: ``train_stage`` and ``loss_fct`` (the pre-training
    BCE becomes CE or BPR, as S3Rec's constructor would have chosen for ``train_stage: finetune``).
    """

    def __init__(self, config, model):
        # checked before RecBole's Trainer is built (it opens a log folder and a tensorboard writer)
        if getattr(model, "train_stage", None) not in _STAGES:
            raise ValueError(f"S3RecTrainer: train_stage must be one of {_STAGES}, got {model.train_stage!r}")
        super().__init__(config, model)

        # load parameters info
        self.pretrain_epochs = config["pretrain_epochs"] or 0
        self.finetune_loss_type = config["loss_type"]

    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        """Pre-train (unless the model is already in the fine-tuning stage or training is resumed), then fine-tune.

        Returns:
            (float, dict): best validation score and result of the fine-tuning stage.
        """
        self._start_clock()  # pre-training counts as training time too
        if self.model.train_stage == "pretrain":
            resumed = self.start_epoch > 0  # resume_checkpoint restored fine-tuning's optimizer: keep it
            if not resumed and self.progress_stage() is None:  # resumed runs come from fine-tuning
                self.pretrain(train_data, verbose=verbose, show_progress=show_progress)
            self._start_finetune(new_optimizer=not resumed)
        return super().fit(
            train_data, valid_data, verbose=verbose, saved=saved, show_progress=show_progress, callback_fn=callback_fn
        )

    def pretrain(self, train_data, verbose=True, show_progress=False):
        """``pretrain_epochs`` epochs of S3Rec's self-supervised losses; no evaluation, no checkpoint.

        Returns:
            list[float]: the summed training loss of each pre-training epoch.
        """
        losses = []
        for epoch_idx in range(self.pretrain_epochs):
            start = time()
            loss = self._train_epoch(train_data, epoch_idx, show_progress=show_progress)
            loss = sum(loss) if isinstance(loss, tuple) else loss
            losses.append(loss)
            if verbose:
                self.logger.info("[pretrain] " + self._generate_train_loss_output(epoch_idx, start, time(), loss))
            self._add_train_loss_to_tensorboard(epoch_idx, loss, tag="Loss/Pretrain")
        return losses

    def _start_finetune(self, new_optimizer=True):
        self.model.train_stage = "finetune"
        self.model.loss_fct = nn.CrossEntropyLoss() if self.finetune_loss_type == "CE" else BPRLoss()
        if new_optimizer:
            self.optimizer = self._build_optimizer()
        self.logger.info(f"S3Rec: pre-training done ({self.pretrain_epochs} epochs); fine-tuning")
