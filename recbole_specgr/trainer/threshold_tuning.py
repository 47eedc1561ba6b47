"""
recbole_specgr.trainer.threshold_tuning
#######################################
γ, SpecGR's acceptance threshold, chosen on the validation split (paper 4.1.4: "hyperparameters are tuned on the
in-sample and unseen splits of the validation set"), optionally jointly with γ_u, the threshold for drafts of items
not seen in training, and with the joint ranking's α, v_u and β (none in the paper, see
:class:`~recbole_specgr.inference.specgr.Thresholds`).

Reference:
    Yijie Ding et al. "Inductive Generative Recommendation via Retrieval-based Speculation." arXiv:2410.02939.
"""

import math
import os

import torch
from tqdm import tqdm

from recbole_specgr import compat  # noqa: F401  (must precede recbole imports)
from recbole.utils import set_color

from recbole_specgr.atomic import atomic_write
from recbole_specgr.config import THRESHOLD_GRIDS, text_prior_needs_texts
from recbole_specgr.evaluation import SplitMetrics, check_metrics, result_keys
from recbole_specgr.inference.specgr import SpecGRStats, Thresholds


def sweep_thresholds(trainer, eval_data, thresholds):
    """Evaluate the trainer's speculative model at every entry of ``thresholds`` (γ, or a :class:`Thresholds`
    pair) in one pass over ``eval_data`` (the drafts and their scores do not depend on γ, only where each user stops
    drafting does), weights as they are.

    Returns:
        list[dict]: per entry, in the order given, ``specgr_threshold`` (γ), ``specgr_unseen_threshold`` (γ_u),
        ``specgr_draft_weight`` (α), ``specgr_unseen_score`` (v_u) and ``specgr_text_weight`` (β) plus the flat metrics of :class:`~recbole_specgr.evaluation.SplitMetrics` and SpecGR's acceptance_rate /
        mean_rounds / unseen_share.
    """
    return sweep_with_row_values(trainer, eval_data, thresholds)[0]


@torch.no_grad()
def sweep_with_row_values(trainer, eval_data, thresholds, row_metric=None):
    """:func:`sweep_thresholds`, plus ``[entries, rows]`` per-row values of ``row_metric`` (see
    :meth:`~recbole_specgr.evaluation.SplitMetrics.row_values`; None without a ``row_metric``)."""
    thresholds = [Thresholds.of(t) for t in thresholds]
    model = trainer.model
    model.eval()
    seen = eval_data._dataset.seen_item_mask
    metrics = [SplitMetrics(trainer.topk, seen, trainer.metrics) for _ in thresholds]
    stats = [SpecGRStats() for _ in thresholds]

    def predict(batch):
        """Per setting, the targets' ranks in its lists (no [B, n] per setting) and its statistics."""
        interaction = trainer.with_exclusions(batch[0], eval_data._dataset).to(trainer.device)
        targets = interaction[trainer.item_field]
        outs = model.recommend_thresholds(interaction, thresholds)
        return targets, [(out.target_ranks(targets, m.max_k), out.stats) for out, m in zip(outs, metrics)]

    results = trainer.eval_batches(predict, eval_data)
    if trainer.config["show_progress"]:  # a batch counts when its result is in
        results = tqdm(results, total=len(eval_data), ncols=100, desc=f"γ grid ×{len(thresholds)}")
    for targets, per_setting in results:
        for k, (ranks, batch_stats) in enumerate(per_setting):
            metrics[k].add_ranks(ranks, targets)
            stats[k] = stats[k] + batch_stats
    rows = [{**setting_keys(t), **m.result(), **st.summary()} for t, m, st in zip(thresholds, metrics, stats)]
    values = None if row_metric is None else torch.stack([m.row_values(row_metric).float() for m in metrics])
    return rows, values


def select_setting(rows, metric, tiebreak=None, values=None, floors=None):
    """Index of the chosen row: the best by ``metric`` (the first of equals); with ``tiebreak`` (a metric key) and
    ``values`` (``[entries, rows]`` per-row values of ``metric``), the best by ``tiebreak`` among the rows within one
    standard error of the best — the paired standard error over validation rows of its difference to the best
    (the one-standard-error rule: settings validation cannot tell apart are decided by the second metric).

    ``floors`` (``{metric key: minimum}``) leaves out the rows below any minimum before choosing, e.g.
    ``{"unseen/recall@50": 0.055}`` (a setting must keep that much unseen recall); when no row reaches every minimum,
    all rows are candidates (:func:`meets_floors` tells the caller)."""
    candidates = [i for i in range(len(rows)) if meets_floors(rows[i], floors)] or list(range(len(rows)))
    best = max(candidates, key=lambda i: (rows[i][metric], -i))
    if tiebreak is None or values is None:
        return best
    diff = values[best][None, :] - values  # [entries, rows]
    mean = diff.mean(dim=1)
    standard_error = diff.std(dim=1) / max(1, diff.size(1)) ** 0.5
    tied = [i for i in candidates if mean[i] <= standard_error[i] or i == best]
    return max(tied, key=lambda i: (rows[i][tiebreak], -i))


def meets_floors(row, floors):
    """Whether ``row`` reaches every minimum of ``floors`` (``{metric key: minimum}``; None: no minimum)."""
    return all(row[key] >= minimum for key, minimum in (floors or {}).items())


class ThresholdTuningMixin:
    """For trainers of :class:`~recbole_specgr.model.speculative.SpeculativeEvalMixin` models (before the trainer
    class in the bases).

    Config keys: ``specgr_threshold_grid`` (list of γ; ``~`` = keep ``specgr_threshold``),
    ``specgr_unseen_threshold_grid`` (list of γ_u tried with every γ; ``~`` = γ_u = γ, the paper),
    ``specgr_draft_weight_grid`` (list of α tried with every (γ, γ_u); ``~`` = keep ``specgr_draft_weight``),
    ``specgr_unseen_score_grid`` (list of v_u tried with every α > 0; ``~`` = keep ``specgr_unseen_score``),
    ``specgr_text_weight_grid`` (list of β tried with every α > 0 and v_u; ``~`` = keep ``specgr_text_weight``),
    ``specgr_novelty_weight_grid`` (list of η tried with every α > 0, v_u and β; ``~`` = keep
    ``specgr_novelty_weight``) and
    ``specgr_threshold_metric`` (a key of :func:`~recbole_specgr.evaluation.result_keys`, e.g.
    ``unseen/recall@50``; ``~`` = ``valid_metric``). :meth:`tune_threshold` keeps the first setting of the grid with
    the highest value, or with ``specgr_threshold_tiebreak`` (another such key, e.g. ``ndcg@10``) the best by it
    among the settings within one paired standard error of that highest value (:func:`select_setting`).
    ``specgr_threshold_floors`` (``{key: minimum}`` over the same keys, e.g. ``{unseen/recall@50: 0.055}``; ``~`` =
    none) leaves the settings below a
    minimum out of the choice (all stay in, with a warning, when none reaches it): for a target that the selection
    metric weighs by its share of validation rows only, such as recall on items unseen in training.
    """

    def __init__(self, config, model):
        super().__init__(config, model)

        # load parameters info
        metric = config["specgr_threshold_metric"] or config["valid_metric"]
        grid, unseen_grid, weight_grid, score_grid, text_grid, novelty_grid = (
            _number_list(config, key) for key in THRESHOLD_GRIDS)  # γ, γ_u, α, v_u, β, η
        self.threshold_grid = None  # [(γ, γ_u, α, v_u, β, η)] tried on validation, grid order
        if any(g is not None for g in (grid, unseen_grid, weight_grid, score_grid, text_grid, novelty_grid)):
            for key, values in (("specgr_draft_weight_grid", weight_grid), ("specgr_text_weight_grid", text_grid),
                                ("specgr_novelty_weight_grid", novelty_grid)):
                if values is not None and (min(values) < 0 or not all(math.isfinite(v) for v in values)):
                    raise ValueError(f"{key}: expected finite numbers >= 0, got {values}")
            grid = grid or [config["specgr_threshold"]]
            default = Thresholds(0.0, 0.0)
            weights = weight_grid or [_or(config["specgr_draft_weight"], default.draft_weight)]
            unseen_score = _or(config["specgr_unseen_score"], default.unseen_score)
            scores = score_grid or [unseen_score]
            texts = text_grid or [_or(config["specgr_text_weight"], default.text_weight)]
            novelties = novelty_grid or [_or(config["specgr_novelty_weight"], default.novelty_weight)]
            self.threshold_grid = [  # v_u, β and η matter only for a joint ranking (α > 0): α = 0 is tried once
                Thresholds(float(g), float(g if u is None else u), float(a), float(v) if a > 0 else unseen_score,
                           float(b) if a > 0 else 0.0, float(e) if a > 0 else 0.0)
                for g in grid for u in (unseen_grid or [None]) for a in weights
                for v in (scores if a > 0 else [None]) for b in (texts if a > 0 else [None])
                for e in (novelties if a > 0 else [None])]
        if self.threshold_grid is not None and any(t.text_weight > 0 for t in self.threshold_grid) \
                and model.item_text_embeddings() is None:  # found now, not after training
            raise ValueError(text_prior_needs_texts(text_grid, config["specgr_text_weight"], config["model"]))
        self.threshold_metric = str(metric).lower()
        tiebreak = config["specgr_threshold_tiebreak"]
        self.threshold_tiebreak = None if tiebreak is None else str(tiebreak).lower()
        self.threshold_sweep = None  # rows of sweep_thresholds on the validation data, after tune_threshold()
        if self.threshold_grid is not None:
            check_metrics([("specgr_threshold_metric", metric, ""), ("specgr_threshold_tiebreak", tiebreak, "")],
                          self.metrics, self.topk)
        self.threshold_floors = _floors(config["specgr_threshold_floors"], result_keys(self.metrics, self.topk))

    def tune_threshold(self, valid_data, load_best_model=False):
        """Evaluate every γ of the grid on ``valid_data`` in one pass (with the best checkpoint when
        ``load_best_model``, else the current weights), keep the best γ and make the validation result at that γ the
        trainer's ``best_valid_result`` / ``best_valid_score``.

        Returns:
            dict or None: that validation result (None when there is no grid or no data).
        """
        if self.threshold_grid is None or not valid_data:
            return None
        if load_best_model:
            self.load_model(self.saved_model_file)
        rows = self._validation_sweep(valid_data)
        self.best_valid_result = self.use_threshold(rows)
        self.best_valid_score = self.best_valid_result[self.valid_metric]
        return self.best_valid_result

    def sweep_validation(self, valid_data):
        """One validation pass over the whole γ grid: ``(score, result at the best γ, rows)`` (see
        :func:`sweep_thresholds`), the score being that result's ``valid_metric`` — minus 1 when no setting reaches
        ``specgr_threshold_floors``, so that a checkpoint whose grid reaches them ranks above every one whose grid
        does not (metrics lie in [0, 1]). Changes nothing."""
        rows = self._validation_sweep(valid_data)
        result = _without_threshold(self.best_threshold_row(rows))
        return result[self.valid_metric] - (0.0 if self._floors_reached(rows) else 1.0), result, rows

    def _validation_sweep(self, valid_data):
        """The grid's rows on ``valid_data``, the chosen one (:func:`select_setting`) marked ``"selected": True``."""
        row_metric = self.threshold_metric if self.threshold_tiebreak else None
        rows, values = sweep_with_row_values(self, valid_data, self.threshold_grid, row_metric)
        rows[select_setting(rows, self.threshold_metric, self.threshold_tiebreak, values,
                            self.threshold_floors)]["selected"] = True
        if not self._floors_reached(rows):
            self.logger.warning(f"[SpecGR] no setting of the grid reaches specgr_threshold_floors "
                                f"{self.threshold_floors} on validation: chosen among all of them")
        return rows

    def _floors_reached(self, rows):
        """Whether some row reaches every minimum of ``specgr_threshold_floors`` (True without floors)."""
        return any(meets_floors(row, self.threshold_floors) for row in rows)

    def best_threshold_row(self, rows):
        """The row marked ``selected`` by the validation sweep, else the best by ``specgr_threshold_metric`` (the
        first of equals: grid order decides ties)."""
        marked = [row for row in rows if row.get("selected")]
        return marked[0] if marked else rows[select_setting(rows, self.threshold_metric,
                                                            floors=self.threshold_floors)]

    def use_threshold(self, rows):
        """Set the model's γ and γ_u to the best of ``rows``, keep them as ``threshold_sweep``, log them.

        Returns:
            dict: the validation result at that γ.
        """
        best = self.best_threshold_row(rows)
        self.model.set_specgr_threshold(best["specgr_threshold"], best.get("specgr_unseen_threshold"),
                                        best.get("specgr_draft_weight"), best.get("specgr_unseen_score"),
                                        best.get("specgr_text_weight"), best.get("specgr_novelty_weight"))
        self.threshold_sweep = rows
        at_k = f"{self.metrics[0]}@{max(self.topk)}"  # e.g. recall@50: overall, in-sample and unseen, per row
        for row in rows:
            shown = {key: row[key] for key in (at_k, f"in_sample/{at_k}", f"unseen/{at_k}", "acceptance_rate",
                                               "mean_rounds") if key != self.threshold_metric}
            self.logger.info(f"[SpecGR] {_setting(row)}: {self.threshold_metric} {row[self.threshold_metric]:.6f}, "
                             + ", ".join(f"{key} {v:.4f}" for key, v in shown.items()))
        self.logger.info(set_color(f"[SpecGR] {_setting(best)} chosen on validation "
                                   f"({self.threshold_metric} {best[self.threshold_metric]:.6f})", "blue"))
        return _without_threshold(best)

    def save_chosen_setting(self, path=None):
        """Write the setting chosen on validation (γ, γ_u, α, v_u, β, η) into this run's checkpoint (or into a copy of
        it at ``path``), as its config's ``specgr_*`` values (:func:`chosen_keys`: with how unseen items were ranked
        when it was chosen), so that a model rebuilt from the file alone (``from_checkpoint``,
        :mod:`~recbole_specgr.new_items`) recommends with it. Nothing else in the file changes; no-op before a choice
        or without the file."""
        if self.threshold_sweep is None or not os.path.isfile(self.saved_model_file):
            return
        checkpoint = compat.load_checkpoint(self.saved_model_file, map_location="cpu")
        checkpoint["config"].update(chosen_keys(self.model))
        with atomic_write(path or self.saved_model_file) as f:
            torch.save(checkpoint, f)


def chosen_keys(model) -> dict:
    """The config keys a model rebuilt from its checkpoint needs to recommend as ``model`` does now: its setting
    (:func:`setting_keys`) and the recommender's switches that the setting was chosen with (a retuned checkpoint saved
    before ``specgr_rank_all_unseen`` existed would otherwise come back with the old value)."""
    recommender = model.speculative_recommender()
    return {**setting_keys(model.specgr_setting), "specgr_rank_all_unseen": recommender.rank_all_unseen,
            "specgr_novelty_last_n": recommender.novelty_last_n}


def setting_keys(setting: Thresholds) -> dict:
    """The result keys of one setting (γ, γ_u, α, v_u, β, η), as sweep rows and result JSONs hold them."""
    return {"specgr_threshold": setting.seen, "specgr_unseen_threshold": setting.unseen,
            "specgr_draft_weight": setting.draft_weight, "specgr_unseen_score": setting.unseen_score,
            "specgr_text_weight": setting.text_weight, "specgr_novelty_weight": setting.novelty_weight}


def _setting(row):
    gamma, unseen = row["specgr_threshold"], row.get("specgr_unseen_threshold", row["specgr_threshold"])
    text = f"γ = {gamma:g}" + ("" if unseen == gamma else f", γ_u = {unseen:g}")
    if row.get("specgr_draft_weight", 0) > 0:
        text += f", α = {row['specgr_draft_weight']:g}, v_u = {row['specgr_unseen_score']:g}"
        if row.get("specgr_text_weight", 0) > 0:
            text += f", β = {row['specgr_text_weight']:g}"
        if row.get("specgr_novelty_weight", 0) > 0:
            text += f", η = {row['specgr_novelty_weight']:g}"
    return text


def _or(value, default):
    return default if value is None else value


def _number_list(config, key):
    """``config[key]`` as a non-empty list of numbers, or None for ``~``; anything else is one clear error."""
    value = config[key]
    if value is None:
        return None
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if not values or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise ValueError(f"{key}: expected a non-empty list of numbers or ~, got {value!r}")
    return values


def _floors(value, allowed):
    """``specgr_threshold_floors`` as ``{metric key: float}`` (None for ``~``); anything else is one clear error."""
    if value is None:
        return None
    if not isinstance(value, dict) or not value:
        raise ValueError(f"specgr_threshold_floors: expected a mapping of metric keys to minimums (e.g. "
                         f"{{unseen/recall@50: 0.05}}) or ~, got {value!r}")
    floors = {}
    for key, minimum in value.items():
        if str(key).lower() not in allowed:
            raise ValueError(f"specgr_threshold_floors: expected keys among {allowed}, got {key!r}")
        if str(key).lower() in floors:
            raise ValueError(f"specgr_threshold_floors: {key!r} is given twice (keys are not case-sensitive)")
        if not isinstance(minimum, (int, float)) or isinstance(minimum, bool):
            raise ValueError(f"specgr_threshold_floors: expected a number for {key!r}, got {minimum!r}")
        floors[str(key).lower()] = float(minimum)
    return floors


def _without_threshold(row):
    return {k: v for k, v in row.items() if k not in setting_keys(Thresholds(0.0, 0.0)) and k != "selected"}
