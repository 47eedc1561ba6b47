"""
recbole_specgr.model.sequential_recommender.specgraux
#####################################################
SpecGR_Aux: speculative generative recommendation with an auxiliary drafter, a generative verifier (TIGER) and an
inductive retrieval model (UniSRec) composed at inference time.

Reference:
    Yijie Ding et al. "Inductive Generative Recommendation via Retrieval-based Speculation." arXiv:2410.02939,
    Section 3.3.1.
"""

from recbole.model.abstract_recommender import SequentialRecommender
from recbole.utils import InputType

from recbole_specgr.compat import load_checkpoint
from recbole_specgr.config import SavedConfig, check_same_split
from recbole_specgr.model.speculative import SpeculativeEvalMixin

ROLES = ("verifier", "drafter")
ROLE_METHODS = {
    "verifier": ("encode", "digit_log_probs", "beam_search"),
    "drafter": ("sequence_vectors", "item_vectors"),
}
# Shared-layer keys that name one model's weights, so are never handed to a component.
NOT_CARRIED = ("init_checkpoint", "progress_file")


def component_config(config, model_name, overrides=None):
    """The Config of a component: its own YAML defaults, then the keys the user set that belong to the layers every
    model shares (:func:`~recbole_specgr.config.shared_keys`: run, data, split, tokenizer — so the semantic IDs are
    the same —, training loop, evaluation; ``device`` too), then ``overrides`` (a dict of the component's own keys).
    The command line is not read again: what it set reaches the component through ``config`` as above."""
    from recbole_specgr.config import ComponentConfig, shared_keys

    carried_keys = (shared_keys(config["dataset"]) | {"device"}) - set(NOT_CARRIED)
    carried = {key: value for key, value in config.external_config_dict.items() if key in carried_keys}
    return ComponentConfig(model=model_name, dataset=config["dataset"], config_dict={**carried, **(overrides or {})})


class SpecGRAux(SpeculativeEvalMixin, SequentialRecommender):
    r"""A verifier (default TIGER) and a drafter (default UniSRec), each a full model of its own class, config and
    checkpoint; ``full_sort_predict`` is speculative inference over the two.

    Each component (role: verifier / drafter) comes from ``specgr_aux_<role>_checkpoint``, a checkpoint of
    :class:`~recbole_specgr.trainer.InductiveTrainer` (the class its config names, rebuilt with that config and the
    current dataset, then its weights). When that key is empty, the component is built untrained from the YAML
    defaults of ``specgr_aux_<role>_model`` (:func:`component_config`, overridden by ``specgr_aux_<role>_config``),
    and :class:`~recbole_specgr.trainer.SpecGRAuxTrainer` trains it before evaluating the composition. The
    composition's own checkpoint holds both components' weights (``verifier.*``, ``drafter.*``).

    Args:
        config: RecBole config: ``specgr_aux_<role>_checkpoint``, ``specgr_aux_<role>_model``,
            ``specgr_aux_<role>_config`` (role: verifier / drafter) and the ``specgr_*`` inference keys.
        dataset: the training dataset (``seen_item_mask``; whatever the components need).
    """

    input_type = InputType.POINTWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # load parameters info
        self.component_checkpoints = {role: config[f"specgr_aux_{role}_checkpoint"] for role in ROLES}
        self.component_models = {role: config[f"specgr_aux_{role}_model"] for role in ROLES}
        self.component_overrides = {role: config[f"specgr_aux_{role}_config"] or {} for role in ROLES}
        for role, overrides in self.component_overrides.items():
            if not isinstance(overrides, dict):
                raise ValueError(f"specgr_aux_{role}_config: expected a dict of config keys, got {overrides!r}")
        seen = getattr(dataset, "seen_item_mask", None)
        if seen is None or tuple(seen.shape) != (self.n_items,):
            raise ValueError(f"SpecGRAux: dataset.seen_item_mask must be a bool tensor [{self.n_items}]")

        # define layers and loss
        self.register_buffer("seen_item_mask", seen.bool().clone(), persistent=False)  # [n]
        text_emb = getattr(dataset, "item_text_emb", None)
        self.register_buffer("item_text_emb", None if text_emb is None else text_emb.float().clone(),
                             persistent=False)  # [n, d] for the text prior (None: no item texts)
        self.component_configs = {}  # role -> Config of the components built untrained (to be trained)
        for role in ROLES:
            setattr(self, role, self._build_component(role, config, dataset))

        # parameters initialization: done by the components (or loaded from their checkpoints)
        self._init_speculative(config, dataset)

    def _build_component(self, role, config, dataset):
        from recbole_specgr.utils import get_model

        path = self.component_checkpoints[role]
        if path:
            checkpoint = load_checkpoint(path, map_location="cpu")
            component_conf = SavedConfig(checkpoint["config"], device=config["device"])
            check_same_split(f"specgr_aux_{role}_checkpoint", path, checkpoint, config, self.seen_item_mask)
        else:
            component_conf = component_config(config, self.component_models[role], self.component_overrides[role])
        model = get_model(component_conf["model"])(component_conf, dataset)
        missing = [name for name in ROLE_METHODS[role] if not callable(getattr(model, name, None))]
        if missing:
            raise ValueError(f"specgr_aux_{role}: {component_conf['model']} cannot be the {role} (no {missing})")
        if path:
            try:
                model.load_state_dict(checkpoint["state_dict"])
            except RuntimeError as err:
                raise ValueError(f"specgr_aux_{role}_checkpoint: {path} does not fit this dataset ({err})") from None
            model.load_other_parameter(checkpoint.get("other_parameter"))
            self.logger.info(f"SpecGRAux: {role} {component_conf['model']} loaded from {path}")
        else:
            self.component_configs[role] = component_conf
            self.logger.info(f"SpecGRAux: {role} {component_conf['model']} built from its defaults; trained by fit()")
        return model

    def untrained_components(self):
        """``[(role, model, config)]`` of the components that did not come from a checkpoint."""
        return [(role, getattr(self, role), conf) for role, conf in self.component_configs.items()]

    def speculative_parts(self):
        return self.verifier, self.drafter, self.seen_item_mask

    def item_text_embeddings(self):
        return self.item_text_emb

    def calculate_loss(self, interaction):
        raise NotImplementedError(
            "SpecGRAux has no loss of its own: SpecGRAuxTrainer trains its components with their own trainers"
        )

    def predict(self, interaction):
        """Verification score V (eq. 2) of ``interaction``'s item: ``[B]``."""
        return self.verifier.predict(interaction)
