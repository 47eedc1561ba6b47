"""
recbole_specgr.trainer.inductive_trainer
########################################
RecBole's :class:`~recbole.trainer.Trainer` with split-aware full-ranking evaluation and atomic checkpoints.
"""

import torch
from tqdm import tqdm

from recbole_specgr import compat  # noqa: F401  (must precede recbole imports)
from recbole.trainer import Trainer
from recbole.utils import set_color

from recbole_specgr.atomic import atomic_write
from recbole_specgr.compat import load_checkpoint
from recbole_specgr.evaluation import SplitMetrics


class InductiveTrainer(Trainer):
    """Evaluates ``model.full_sort_predict`` (``[B, n_items]``, −inf = not recommended) with Recall/NDCG@``topk``
    overall, on in-sample targets and on unseen targets (see :mod:`recbole_specgr.evaluation`).

    A model may expose ``pop_eval_stats() -> dict`` (e.g. SpecGR's acceptance rate); its values are added to the result.
    """

    def __init__(self, config, model):
        super().__init__(config, model)
        self.topk = list(config["topk"])
        self.item_field = config["ITEM_ID_FIELD"]

    @torch.no_grad()
    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if not eval_data:
            return None
        if load_best_model:
            self.load_model(model_file or self.saved_model_file)
        self.model.eval()
        metrics = SplitMetrics(self.topk, eval_data._dataset.seen_item_mask)
        batches = tqdm(eval_data, total=len(eval_data), ncols=100, desc=set_color("Evaluate   ", "pink")) \
            if show_progress else eval_data
        for interaction, _history_index, _positive_u, _positive_i in batches:
            interaction = interaction.to(self.device)
            scores = self.model.full_sort_predict(interaction).view(len(interaction), -1).float()  # [B, n_items]
            scores[:, 0] = -torch.inf
            metrics.add(scores, interaction[self.item_field])
        result = metrics.result()
        if hasattr(self.model, "pop_eval_stats"):
            result.update(self.model.pop_eval_stats())
        return result

    def load_model(self, checkpoint_file):
        """Load a checkpoint written by :meth:`_save_checkpoint` (trusted, see :mod:`recbole_specgr.compat`)."""
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

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        """RecBole's checkpoint, written through a temporary file so that no half-written file is left behind."""
        saved_model_file = kwargs.pop("saved_model_file", self.saved_model_file)
        state = {
            "config": self.config,
            "epoch": epoch,
            "cur_step": self.cur_step,
            "best_valid_score": self.best_valid_score,
            "state_dict": self.model.state_dict(),
            "other_parameter": self.model.other_parameter(),
            "optimizer": self.optimizer.state_dict(),
        }
        with atomic_write(saved_model_file) as f:
            torch.save(state, f, pickle_protocol=4)
        if verbose:
            self.logger.info(set_color("Saving current", "blue") + f": {saved_model_file}")
