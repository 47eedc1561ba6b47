"""
recbole_specgr.model.sequential_recommender.rqvae
#################################################
RQVAE: the semantic-ID tokenizer run as a RecBole model (``--model=RQVAE``), to fit it and inspect its statistics.

Reference:
    Shashank Rajput et al. "Recommender Systems with Generative Retrieval" (TIGER). NeurIPS 2023.

There is no per-interaction loss: :class:`~recbole_specgr.trainer.rqvae_trainer.RQVAETrainer` fits the
:class:`~recbole_specgr.tokenizer.semantic_id.SemanticIDTokenizer` on the text embeddings of the items seen in
training and caches the semantic IDs in ``cache_dir``, where TIGER / SpecGR pick them up.
"""

from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType

from recbole_specgr.tokenizer.semantic_id import SemanticIDTokenizer


class RQVAE(SequentialRecommender):
    """Holds the item text embeddings and a :class:`SemanticIDTokenizer`; after :meth:`fit_tokenizer`, the fitted
    quantiser is the submodule ``quantizer`` (so RecBole counts its parameters)."""

    input_type = InputType.POINTWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # load parameters info
        self.item_text_emb = dataset.item_text_emb  # [n, d], kept out of the state dict
        self.seen_item_mask = dataset.seen_item_mask  # [n]

        # define layers and loss
        self.tokenizer = SemanticIDTokenizer(config)
        self.quantizer = None

    def fit_tokenizer(self, use_cache: bool = False) -> dict:
        """Fit the tokenizer on seen items (or, with ``use_cache``, reuse cached IDs); returns its statistics."""
        if use_cache:
            self.tokenizer.load_or_fit(self.item_text_emb, self.seen_item_mask)
        else:
            self.tokenizer.fit(self.item_text_emb, self.seen_item_mask)
        self.quantizer = self.tokenizer.quantizer
        return dict(self.tokenizer.stats)

    def save_tokenizer(self) -> str:
        """Write the fitted tokenizer to its cache file in ``cache_dir``; returns the path."""
        path = self.tokenizer.cache_path(self.item_text_emb, self.seen_item_mask)
        self.tokenizer.save(path)
        return path

    def calculate_loss(self, interaction):
        raise NotImplementedError(
            "RQVAE has no per-interaction loss: RQVAETrainer.fit fits the semantic-ID tokenizer on item text embeddings"
        )

    def predict(self, interaction):
        raise NotImplementedError("RQVAE does not rank items: it only fits the semantic-ID tokenizer")

    def full_sort_predict(self, interaction):
        raise NotImplementedError("RQVAE does not rank items: it only fits the semantic-ID tokenizer")
