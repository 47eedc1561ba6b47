"""
recbole_specgr.trainer.rqvae_trainer
####################################
Fits the semantic-ID tokenizer of a :class:`~recbole_specgr.model.sequential_recommender.rqvae.RQVAE` model.

Training length, learning rate and batch size come from ``rqvae_epochs``, ``rqvae_learning_rate`` and
``rqvae_batch_size`` (read by the tokenizer); the interaction dataloaders are not used.
"""

from logging import getLogger

from recbole_specgr import compat  # noqa: F401  (must precede recbole imports)
from recbole.trainer import AbstractTrainer


class RQVAETrainer(AbstractTrainer):
    """``fit`` trains the tokenizer and caches its IDs; ``evaluate`` returns the tokenizer statistics:
    ``recon_loss`` (seen items), ``recon_loss_unseen``, ``codebook_usage_<k>`` and ``perplexity_<k>`` per level k,
    ``collision_share`` (items with collision digit > 0), ``max_collisions`` (most items sharing one prefix),
    ``n_items``, ``n_seen``."""

    def __init__(self, config, model):
        super().__init__(config, model)
        self.logger = getLogger()
        self.saved_model_file = None  # the cached semantic IDs, once fit() has saved them

    def fit(self, train_data=None, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        """Fit the tokenizer on the seen items; with ``saved``, write its IDs to ``cache_dir`` (path kept in
        ``saved_model_file``).

        Returns:
            (float, dict): ``-recon_loss`` (higher is better, as RecBole's ``valid_metric_bigger`` assumes) and the
            statistics.
        """
        stats = self.model.fit_tokenizer()
        if saved:
            self.saved_model_file = self.model.save_tokenizer()
        return -stats["recon_loss"], stats

    def evaluate(self, eval_data=None, load_best_model=True, model_file=None, show_progress=False):
        """The tokenizer statistics (fitting it first, from the cache if possible, when ``fit`` was not called)."""
        if self.model.tokenizer.codes is None:
            return self.model.fit_tokenizer(use_cache=True)
        return dict(self.model.tokenizer.stats)
