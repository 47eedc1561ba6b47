"""
recbole_specgr.model.speculative
################################
:class:`SpeculativeEvalMixin`: the RecBole side of speculative inference, shared by SpecGR++ and SpecGR_Aux.

A model that mixes it in answers ``full_sort_predict`` with :class:`~recbole_specgr.inference.specgr.
SpeculativeRecommender` over its own verifier and drafter, keeps the drafting index in step with its weights, and
reports SpecGR's statistics through ``pop_eval_stats`` (read by :class:`~recbole_specgr.trainer.InductiveTrainer`).

Reference:
    Yijie Ding et al. "Inductive Generative Recommendation via Retrieval-based Speculation." arXiv:2410.02939.
"""

import contextlib
import logging
import threading
import time
from functools import partial
from typing import Optional

import torch

from recbole_specgr.evaluation import EXCLUDED_ITEMS
from recbole_specgr.inference.specgr import SpeculativeRecommender, SpecGRStats, Thresholds
from recbole_specgr.inference.text_prior import TextPrior, text_prior_of


def allowed_items(interaction):
    """``[B, n]`` bool of the items each row may be recommended (``~EXCLUDED_ITEMS``), or None for all."""
    return ~interaction[EXCLUDED_ITEMS] if EXCLUDED_ITEMS in interaction else None


BUILD_LOCK = threading.RLock()
"""Serialises what speculative models build lazily at a prediction (the recommender and its drafting index,
SpecGR++'s drafter vectors): evaluation workers predict together (``eval_workers``). One for every model, so that a
model holds no lock and stays copyable and picklable (``copy.deepcopy``, ``torch.save(model)``)."""


class EvalLog:
    """SpecGR's statistics of the predictions since the last :meth:`pop`, and the time spent predicting: the seconds
    during which at least one prediction ran, so that predictions of several evaluation workers at once
    (``eval_workers``) count their overlap once and users/s stays users over wall time. Safe to share between threads."""

    def __init__(self, clock=time.perf_counter):
        self._clock = clock
        self._lock = threading.Lock()
        self._running = 0  # predictions running now
        self._since = 0.0  # when the running ones began to overlap
        self._stats, self._seconds = SpecGRStats(), 0.0

    @contextlib.contextmanager
    def predicting(self):
        """Time the block as a prediction."""
        with self._lock:
            if self._running == 0:
                self._since = self._clock()
            self._running += 1
        try:
            yield
        finally:
            with self._lock:
                self._running -= 1
                if self._running == 0:
                    self._seconds += self._clock() - self._since

    def add(self, stats: SpecGRStats) -> None:
        with self._lock:
            self._stats = self._stats + stats

    def pop(self):
        """``(stats, seconds)`` so far, and start again from zero."""
        with self._lock:
            out = self._stats, self._seconds
            self._stats, self._seconds = SpecGRStats(), 0.0
        return out

    def __getstate__(self):  # a lock cannot be copied or pickled: a copy gets its own
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()


class SpeculativeEvalMixin:
    """Mixed into a :class:`~recbole.model.abstract_recommender.SequentialRecommender` (before it in the bases).

    The host implements :meth:`speculative_parts` (and :meth:`item_text_embeddings` when it has item texts, for the
    joint ranking's text prior) and calls :meth:`_init_speculative` at the end of ``__init__``.

    Index freshness: a *weights version* is bumped whenever the weights may have changed (``train()``,
    ``load_state_dict``, :meth:`weights_changed`); the drafting index is rebuilt from ``drafter.item_vectors()`` at the
    first prediction after a bump. The whole :class:`SpeculativeRecommender` (prefix tables included) is rebuilt when
    the device or the number of items changes.
    """

    def speculative_parts(self):
        """``(verifier, drafter, seen_item_mask)`` used for inference."""
        raise NotImplementedError

    def item_text_embeddings(self) -> Optional[torch.Tensor]:
        """``[n, d]`` item text embeddings for the text prior, or None (no prior: ``specgr_text_weight`` must be 0)."""
        return None

    def _init_speculative(self, config, dataset=None):
        """Read the ``specgr_*`` inference keys (through :meth:`SpeculativeRecommender.from_config`) once; the text
        prior's centre comes from ``dataset``'s training rows (see :func:`~recbole_specgr.inference.text_prior.
        text_prior_of`)."""
        self._make_recommender = partial(SpeculativeRecommender.from_config, config)
        self._text_prior = text_prior_of(config, dataset, self.item_text_embeddings())
        if self._text_prior is not None:
            logging.getLogger().info(f"[SPECGR] text prior: the last {self._text_prior.last_n} items' texts, centre "
                                     f"c̄ = {self._text_prior.center:.4f} (mean cosine of training (history, next item))")
        self._recommender = self._make_recommender(*self.speculative_parts(), text_prior=self._text_prior)
        self._thresholds = self._recommender.thresholds  # (γ, γ_u, α, v_u, β, η); set_specgr_threshold changes them
        self._recommender_key = None  # (device, n_items, prefix index) the recommender was built for
        self._weights_version = 0
        self._index_version = -1
        self._eval_log = EvalLog()

    @property
    def specgr_threshold(self) -> float:
        """γ currently used by :meth:`full_sort_predict`."""
        return self._thresholds.seen

    @property
    def specgr_unseen_threshold(self) -> float:
        """γ_u, the threshold for drafts of items not seen in training, currently used by :meth:`full_sort_predict`."""
        return self._thresholds.unseen

    @property
    def specgr_setting(self) -> Thresholds:
        """(γ, γ_u, α, v_u, β, η) currently used by :meth:`full_sort_predict`."""
        return self._thresholds

    def set_specgr_threshold(self, threshold: float, unseen_threshold: Optional[float] = None,
                             draft_weight: Optional[float] = None, unseen_score: Optional[float] = None,
                             text_weight: Optional[float] = None, novelty_weight: Optional[float] = None) -> None:
        """Use γ = ``threshold`` and γ_u = ``unseen_threshold`` (None = γ) from the next prediction on (e.g. the
        values chosen on validation data), and the joint ranking's α = ``draft_weight``, v_u = ``unseen_score``,
        β = ``text_weight`` and η = ``novelty_weight`` (None = keep the current ones)."""
        unseen = threshold if unseen_threshold is None else unseen_threshold
        current = self._thresholds
        self._thresholds = Thresholds(float(threshold), float(unseen),
                                      current.draft_weight if draft_weight is None else float(draft_weight),
                                      current.unseen_score if unseen_score is None else float(unseen_score),
                                      current.text_weight if text_weight is None else float(text_weight),
                                      current.novelty_weight if novelty_weight is None else float(novelty_weight))
        self._use_thresholds()

    def _use_thresholds(self):
        recommender, setting = self._recommender, self._thresholds
        recommender.threshold, recommender.unseen_threshold = setting.seen, setting.unseen
        recommender.draft_weight, recommender.unseen_score = setting.draft_weight, setting.unseen_score
        recommender.text_weight, recommender.novelty_weight = setting.text_weight, setting.novelty_weight

    def weights_changed(self):
        """Mark the drafting index stale (call after changing weights from outside ``train()``)."""
        self._weights_version += 1

    def train(self, mode=True):
        if mode:
            self.weights_changed()
        return super().train(mode)

    def load_state_dict(self, state_dict, strict=True, **kwargs):
        result = super().load_state_dict(state_dict, strict=strict, **kwargs)
        self.weights_changed()
        return result

    def speculative_recommender(self) -> SpeculativeRecommender:
        """The recommender for the current device, items and weights (rebuilt / refreshed when stale, by one thread
        at a time: evaluation workers call it together, :data:`BUILD_LOCK`)."""
        with BUILD_LOCK:
            verifier, drafter, seen = self.speculative_parts()
            key = (str(verifier.item2codes.device), verifier.item2codes.size(0), verifier.prefix_index)  # by identity
            if key != self._recommender_key:
                self._recommender = self._make_recommender(verifier, drafter, seen,
                                                           text_prior=self._current_text_prior(key))
                self._use_thresholds()
                self._recommender_key = key
                self._index_version = -1
            if self._index_version != self._weights_version:
                was_training = self.training
                super().train(False)  # item vectors without dropout; not a weight change
                self._recommender.refresh()
                super().train(was_training)
                self._index_version = self._weights_version
            return self._recommender

    @property
    def text_prior_center(self) -> Optional[float]:
        """c̄, the text prior's centre, computed from the training rows; saved in the checkpoint (``other_parameter``)
        so that a model rebuilt from its file alone (no dataset) ranks unseen items as it was validated. None
        without a prior."""
        return None if self._text_prior is None else self._text_prior.center

    @text_prior_center.setter
    def text_prior_center(self, center: Optional[float]):
        if center is None or self._text_prior is None:
            return
        self._text_prior.center = float(center)
        self._recommender_key = None  # rebuilt recommenders copy the prior (_current_text_prior): rebuild at next use

    def _current_text_prior(self, key) -> Optional[TextPrior]:
        """The text prior on the verifier's device over the current items (items added after training included)."""
        texts = self.item_text_embeddings()
        if self._text_prior is None or texts is None:
            return None
        return TextPrior(texts.to(key[0]), self._text_prior.last_n, self._text_prior.center)

    def full_sort_predict(self, interaction):
        """``[B, n]`` scores: finite at the K = max(``topk``) items SpecGR recommends, −inf elsewhere."""
        recommender = self.speculative_recommender()
        with self._eval_log.predicting():
            out = recommender.recommend(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN],
                                        allowed_items=allowed_items(interaction))
        self._eval_log.add(out.stats)
        return out.scores

    def recommend_thresholds(self, interaction, thresholds):
        """An iterator of one :class:`~recbole_specgr.inference.specgr.SpecGROutput` per entry of ``thresholds`` (γ,
        or a :class:`~recbole_specgr.inference.specgr.Thresholds` pair) for one pass over the batch (each equal to
        :meth:`full_sort_predict` at those thresholds; see ``SpeculativeRecommender.recommend_thresholds``).
        Not counted in :meth:`pop_eval_stats`."""
        recommender = self.speculative_recommender()
        return recommender.recommend_thresholds(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN], thresholds,
                                                allowed_items=allowed_items(interaction))

    def pop_eval_stats(self) -> dict:
        """SpecGR statistics of the predictions since the last call (acceptance_rate, mean_rounds, unseen_share,
        users_per_s); empty when there were none."""
        stats, seconds = self._eval_log.pop()
        return stats.summary(seconds) if stats.n_users else {}
