"""The inductive split on a hand-written dataset (tests/fixtures/tiny), checked row by row.

tiny.inter, split_timestamps [5, 8], cold_start_items "year >= 2000" (i5, i6), MAX_ITEM_LIST_LENGTH 2:

    u1: i1@1 i2@2 i5@3 i3@6 i4@8   i5@3 is a cold item inside the training period -> dropped
    u2: i2@1 i3@4 i5@7 i1@9        i5@7 is in the valid period -> kept
    u3: i4@2 i6@7 i2@8

    train  u1 <i1>|i2   u2 <i2>|i3
    valid  u1 <i1,i2>|i3   u2 <i2,i3>|i5   u3 <i4>|i6
    test   u1 <i2,i3>|i4   u2 <i3,i5>|i1   u3 <i4,i6>|i2

Seen items = {i1, i2, i3, i4}: i4 occurs in the training period only as u3's first interaction (no training row holds
it), and counts as seen as in the paper (its train split holds that interaction); the cold items i5 and i6 are unseen.
"""

import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from recbole_specgr.config import Config
from recbole_specgr.data.dataset import InductiveSequentialDataset
from recbole_specgr.data.text_embedding import DEFAULT_ENCODER  # noqa: F401


def build(config_dict):
    config = Config(model="SASRec", dataset="tiny", config_dict=config_dict)
    return InductiveSequentialDataset(config)


def rows(ds, part):
    """[(user, [history], target)] of one split, in raw tokens, sorted by user."""
    users = ds.id2token("user_id", part.inter_feat["user_id"].numpy())
    targets = ds.id2token("item_id", part.inter_feat["item_id"].numpy())
    lists, lengths = part.inter_feat["item_id_list"].numpy(), part.inter_feat["item_length"].numpy()
    hist = [list(ds.id2token("item_id", lst[:n])) for lst, n in zip(lists, lengths)]
    return sorted(zip(users.tolist(), hist, targets.tolist()))


def test_rows_of_each_split_match_the_hand_computed_split(tiny_config):
    ds = build(tiny_config)
    train, valid, test = ds.build()
    assert rows(ds, train) == [("u1", ["i1"], "i2"), ("u2", ["i2"], "i3")]
    assert rows(ds, valid) == [("u1", ["i1", "i2"], "i3"), ("u2", ["i2", "i3"], "i5"), ("u3", ["i4"], "i6")]
    assert rows(ds, test) == [("u1", ["i2", "i3"], "i4"), ("u2", ["i3", "i5"], "i1"), ("u3", ["i4", "i6"], "i2")]


def test_seen_mask_matches_hand_computed_items(tiny_config):
    ds = build(tiny_config)
    seen = {ds.id2token("item_id", i) for i in torch.nonzero(ds.seen_item_mask).flatten().tolist()}
    assert seen == {"i1", "i2", "i3", "i4"}
    assert not ds.seen_item_mask[0]
    train, _, test = ds.build()
    assert train.seen_item_mask is ds.seen_item_mask  # split copies share the item side


def test_no_training_row_holds_a_cold_item_or_a_post_cutoff_interaction(tiny_config):
    tiny_config["split_timestamps"] = [4, 8]
    ds = build(tiny_config)
    train = ds.build()[0]
    cold = {ds.token2id("item_id", t) for t in ["i5", "i6"]}
    items = set(train.inter_feat["item_id"].tolist()) | set(train.inter_feat["item_id_list"].flatten().tolist())
    assert not items & cold
    assert train.inter_feat["timestamp"].max().item() < 4


def test_without_cold_rule_the_early_cold_interaction_is_a_training_target(tiny_config):
    tiny_config["cold_start_items"] = None
    ds = build(tiny_config)
    assert ("u1", ["i1", "i2"], "i5") in rows(ds, ds.build()[0])
    assert ("u1", ["i2", "i5"], "i3") in rows(ds, ds.build()[1])  # MAX_ITEM_LIST_LENGTH = 2 keeps the 2 latest


def test_quantile_split_cutoffs(tiny_config):
    tiny_config["split_timestamps"] = None
    tiny_config["split_time_quantiles"] = [0.5, 0.75]
    ds = build(tiny_config)
    times = np.array([1, 2, 3, 6, 8, 1, 4, 7, 9, 2, 7, 8], dtype=float)
    assert ds.split_timestamps == tuple(np.quantile(times, [0.5, 0.75]))


def test_item_texts_follow_item_ids(tiny_config):
    ds = build(tiny_config)
    assert ds.item_texts[0] == ""
    assert ds.item_texts[ds.token2id("item_id", "i2")] == "Beta. Comedy Drama"
    assert ds.item_texts[ds.token2id("item_id", "i4")] == "Delta"  # empty genre leaves no dangling separator


@pytest.mark.parametrize(
    "override, message",
    [
        ({"text_fields": ["title", "plot"]}, "text_fields: field 'plot' is not in 'tiny.item' "),
        # in the file, but not loaded: the fix is load_col, not the file
        ({"text_fields": ["title", "genre"], "load_col": {"inter": ["user_id", "item_id", "timestamp"],
                                                         "item": ["item_id", "title", "year"]}},
         "text_fields: field 'genre' is in 'tiny.item' but not loaded: add it to load_col.item "),
        ({"cold_start_items": "year >>> 3"}, "cold_start_items: cannot evaluate"),
        ({"split_timestamps": [8, 5]}, "split_timestamps: expected [t_valid, t_test]"),
        ({"split_timestamps": [100, 200]}, "the valid split of 'tiny' is empty"),
        ({"split_timestamps": "later"}, "split_timestamps: expected"),
    ],
)
def test_bad_dataset_settings_raise_one_clear_error(tiny_config, override, message):
    tiny_config.update(override)
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        build(tiny_config)


def test_a_time_field_left_out_of_load_col_names_the_fix(tiny_config):
    tiny_config["load_col"] = {"inter": ["user_id", "item_id"], "item": ["item_id", "title", "year", "genre"]}
    with pytest.raises(ValueError, match=re.escape(
            "tiny.inter: field 'timestamp' (TIME_FIELD) is dropped by load_col.inter ['user_id', 'item_id'] (list it "
            "there, e.g. in your dataset YAML: load_col: {inter: [user_id, item_id, rating, timestamp]}; README, "
            "'Your own data'); header: ['user_id', 'item_id', 'rating', 'timestamp']")):
        build(tiny_config)


def test_text_models_on_a_dataset_without_text_fields_name_the_key(tiny_config):
    tiny_config["text_fields"] = None
    dataset = build(tiny_config)
    with pytest.raises(ValueError, match=re.escape("text_fields: dataset 'tiny' has none configured; text models need "
                                                   "them (the item fields joined into each item's text")):
        dataset.item_texts


def copy_of_tiny(tmp_path, tiny_config, edit_file, name):
    """``tiny_config`` on a copy of the tiny dataset whose ``tiny.<name>`` is rewritten by ``edit_file(text)``."""
    data = tmp_path / "data"
    shutil.copytree(Path(tiny_config["data_path"]) / "tiny", data / "tiny")
    path = data / "tiny" / f"tiny.{name}"
    path.write_text(edit_file(path.read_text()))
    return {**tiny_config, "data_path": str(data), "cache_dir": str(tmp_path / "cache")}


def test_a_missing_year_is_left_out_of_the_text_not_filled_with_the_mean(tiny_config, tmp_path):
    """RecBole fills a missing float with the column's mean: i1's text read 'Alpha. 1997.17'."""
    config = copy_of_tiny(tmp_path, tiny_config, lambda text: text.replace("Alpha\t1990", "Alpha\t"), "item")
    ds = build({**config, "text_fields": ["title", "year"]})
    assert ds.item_texts[ds.token2id("item_id", "i1")] == "Alpha"
    assert ds.item_texts[ds.token2id("item_id", "i2")] == "Beta. 1995"


def test_rows_repeating_user_item_and_time_are_dropped_with_a_count(tiny_config, tmp_path, caplog):
    """A copied .inter row doubled its user's evaluation rows; the second copy could never be recommended under
    eval_exclude_history. Only exact repeats go: the same item at another time is a new interaction."""
    clean = build(tiny_config)
    repeated = "u1\ti3\t5\t6\nu1\ti3\t5\t6\nu1\ti1\t5\t7\n"  # u1's i3 at 6 twice more; i1 again, at 7
    config = copy_of_tiny(tmp_path, tiny_config, lambda text: text + repeated, "inter")
    with caplog.at_level(logging.WARNING):
        ds = build(config)
    warned = [r.getMessage() for r in caplog.records if "repeat an earlier row" in r.getMessage()]
    assert len(warned) == 1 and warned[0].startswith("[DATA] dropped 2 of ")
    assert len(ds.inter_feat) == len(clean.inter_feat) + 1  # u1's i1 at time 7 stays


def test_texts_that_start_with_a_quote_or_run_long_are_read_as_written(tiny_config, tmp_path):
    """CSV parsing refused a title starting with '"' ("'\\t' expected after '\\"'", no file named) and a field over
    128 KiB ("field larger than field limit")."""
    long_title = "Epic " * 40000  # 200 KB
    config = copy_of_tiny(tmp_path, tiny_config, lambda text: text.replace("Alpha", '"Weird Al" Live')
                          .replace("Beta", long_title.strip()), "item")
    ds = build(config)
    assert ds.item_texts[ds.token2id("item_id", "i1")] == '"Weird Al" Live. Drama'
    assert ds.item_texts[ds.token2id("item_id", "i2")] == f"{long_title.strip()}. Comedy Drama"


def test_no_interaction_with_an_item_of_the_item_file_is_named(tiny_config, tmp_path):
    """RecBole ended with "Some feat is empty, please check the filtering settings"."""
    def capitalised(text):  # I1, I2, … in the .inter file, i1, i2, … in the .item file
        return text.replace("\ti", "\tI").replace("\tItem_id", "\titem_id")

    config = copy_of_tiny(tmp_path, tiny_config, capitalised, "inter")
    with pytest.raises(ValueError, match=r"^/.*/tiny/tiny\.inter: none of its \d+ interactions names ids that have "
                                         r"rows in tiny\.item \(filter_inter_by_user_or_item\)"):
        build(config)


def test_a_cold_start_rule_that_matches_nothing_warns(tiny_config, caplog):
    with caplog.at_level(logging.WARNING):
        build({**tiny_config, "cold_start_items": "year >= 3000"})
    assert ["[SPLIT] cold_start_items 'year >= 3000' matches no item of 'tiny': no item is held out of training"] == [
        r.getMessage() for r in caplog.records if "cold_start_items" in r.getMessage()]


def test_a_cold_start_rule_on_a_field_left_out_of_load_col_names_load_col(tiny_config):
    """It said only "name 'year' is not defined"."""
    load_col = {"inter": ["user_id", "item_id", "rating", "timestamp"], "item": ["item_id", "title", "genre"]}
    with pytest.raises(ValueError, match=r"^cold_start_items: cannot evaluate 'year >= 1999' .*; year is in "
                                         r"'tiny\.item' but not loaded: add it to load_col\.item$"):
        build({**tiny_config, "load_col": load_col, "cold_start_items": "year >= 1999"})


def test_a_blank_text_counts_as_none_and_the_warning_names_the_items(tiny_config, tmp_path, caplog):
    config = copy_of_tiny(tmp_path, tiny_config, lambda text: text.replace("Gamma", "   "), "item")
    with caplog.at_level(logging.WARNING):
        ds = build({**config, "text_fields": ["title"]})
        assert ds.item_texts[ds.token2id("item_id", "i3")] == ""  # was "   ", encoded as if it were a text
    assert "[TEXT] 1 items of 'tiny' have no text in ['title'] (i3)" in [r.getMessage() for r in caplog.records]
