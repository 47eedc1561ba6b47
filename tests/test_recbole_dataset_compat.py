"""RecBole's own dataset classes load hand-made atomic files correctly on pandas 3 (see compat's dataset block).

The ``toy`` dataset (``""`` = an empty cell)::

    toy.inter   user  item  time  linked (token_seq)      toy.item  item  genre  price  tags (token_seq)
                u1    i1    1     i2 i3                             i1    g1     10     a b
                u1    i2    2     ""                                i2    ""     ""     b
                u2    i3    3     i9                                i3    g2     20     ""
                u2    i1    4     i1                                i4    g1     30     c

    toy.user    user  age  gender
                u1    20   F
                u2    ""   ""
                u3    40   M

RecBole numbers tokens in order of first appearance in each id space, from 1 (0 = ``[PAD]``); the item space reads
``toy.inter``'s item column, then ``toy.item``'s, then (with ``alias_of_item_id``) ``linked``.
"""

import subprocess
import sys

import pandas as pd
import pytest
from recbole.data.dataset import Dataset, SequentialDataset

from recbole_specgr.config import Config
from recbole_specgr.utils import create_dataset

TOY = {
    "toy.inter": ["user_id:token\titem_id:token\ttimestamp:float\tlinked:token_seq",
                  "u1\ti1\t1\ti2 i3", "u1\ti2\t2\t", "u2\ti3\t3\ti9", "u2\ti1\t4\ti1"],
    "toy.item": ["item_id:token\tgenre:token\tprice:float\ttags:token_seq",
                 "i1\tg1\t10\ta b", "i2\t\t\tb", "i3\tg2\t20\t", "i4\tg1\t30\tc"],
    "toy.user": ["user_id:token\tage:float\tgender:token", "u1\t20\tF", "u2\t\t", "u3\t40\tM"],
}
# RecBole's layout of pre-split sequential benchmarks: one row per (history, target)
SEQ_HEADER = "user_id:token\titem_id_list:token_seq\titem_id:token"
SPLIT = {
    "split.train.inter": [SEQ_HEADER, "u1\ti1\ti2", "u2\ti2 i1\ti3"],
    "split.valid.inter": [SEQ_HEADER, "u1\ti1 i2\ti3"],
    "split.test.inter": [SEQ_HEADER, "u2\ti2 i1 i3\ti4"],
}


def write_dataset(root, name, files):
    folder = root / name
    folder.mkdir(parents=True)
    for filename, lines in files.items():
        (folder / filename).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(root)


def config(run_dir, model, dataset, files, **overrides):
    data_path = write_dataset(run_dir / "data", dataset, files)
    return Config(model=model, dataset=dataset, config_dict={
        "data_path": data_path, "checkpoint_dir": str(run_dir / "saved"), "state": "ERROR", "load_col": None,
        **overrides,
    })


def ids(column):
    return [list(map(int, v)) for v in column]


def tokens(dataset, field):
    return [str(t) for t in dataset.field2id_token[field]]


def test_token_seq_field_gets_its_own_id_space(run_dir):
    ds = create_dataset(config(run_dir, "BPR", "toy", TOY))
    assert type(ds) is Dataset
    assert ds.inter_feat["item_id"].tolist() == [1, 2, 3, 1]
    assert tokens(ds, "linked") == ["[PAD]", "i2", "i3", "i9", "i1"]
    assert ids(ds.inter_feat["linked"]) == [[1, 2], [], [3], [4]]
    assert tokens(ds, "tags") == ["[PAD]", "a", "b", "c"]
    assert ids(ds.item_feat["tags"]) == [[], [1, 2], [2], [], [3]]  # row 0 = padding item


def test_token_seq_alias_of_item_id_shares_the_item_ids(run_dir):
    ds = create_dataset(config(run_dir, "BPR", "toy", TOY, alias_of_item_id=["linked"]))
    assert tokens(ds, "item_id") == ["[PAD]", "i1", "i2", "i3", "i4", "i9"]
    assert tokens(ds, "linked") == tokens(ds, "item_id")
    assert ds.inter_feat["item_id"].tolist() == [1, 2, 3, 1]
    assert ids(ds.inter_feat["linked"]) == [[2, 3], [], [5], [1]]
    assert ds.item_num == 6 and len(ds.item_feat) == 6  # i9 only occurs in linked, and still gets a feature row


def test_missing_user_and_item_features_are_filled(run_dir):
    """Token fields: ``[PAD]`` (0); float fields: the mean of the known values; token_seq: empty."""
    ds = create_dataset(config(run_dir, "BPR", "toy", TOY))
    # item rows: [PAD], i1, i2 (genre and price missing), i3, i4; known prices 10, 20, 30 -> mean 20
    assert tokens(ds, "genre") == ["[PAD]", "g1", "g2"]
    assert ds.item_feat["genre"].tolist() == [0, 1, 0, 2, 1]
    assert ds.item_feat["price"].tolist() == [20.0, 10.0, 20.0, 20.0, 30.0]
    # user rows: [PAD], u1, u2 (age and gender missing), u3; known ages 20, 40 -> mean 30
    assert tokens(ds, "user_id") == ["[PAD]", "u1", "u2", "u3"]
    assert ds.user_feat["age"].tolist() == [30.0, 20.0, 30.0, 40.0]
    assert ds.user_feat["gender"].tolist() == [0, 1, 0, 2]
    item = ds.get_item_feature()  # the tensors a model reads
    assert item["genre"].tolist() == [0, 1, 0, 2, 1] and item["price"].tolist() == [20.0, 10.0, 20.0, 20.0, 30.0]


def test_benchmark_files_of_a_general_model_are_its_three_splits(run_dir):
    header = "user_id:token\titem_id:token\ttimestamp:float\ttags:token_seq"
    files = {f"bm.{s}.inter": [header, *rows] for s, rows in
             (("train", ["u1\ti1\t1\ta b", "u2\ti2\t2\t"]), ("valid", ["u1\ti3\t3\tc"]), ("test", ["u2\ti1\t4\ta"]))}
    ds = create_dataset(config(run_dir, "BPR", "bm", files, benchmark_filename=["train", "valid", "test"]))
    assert ds.file_size_list == [2, 1, 1] and ds.field2seqlen["tags"] == 2  # longest tag list over the three files
    train, valid, test = ds.build()
    assert [d.inter_feat["user_id"].tolist() for d in (train, valid, test)] == [[1, 2], [1], [2]]
    assert [d.inter_feat["item_id"].tolist() for d in (train, valid, test)] == [[1, 2], [3], [1]]
    assert [d.inter_feat["tags"].tolist() for d in (train, valid, test)] == [[[1, 2], [0, 0]], [[3, 0]], [[1, 0]]]


def test_sequential_benchmark_files_keep_each_row_history_length(run_dir):
    """Item ids in order of first appearance: the targets i2 i3 i3 i4, then the histories (i1 first there)."""
    cfg = config(run_dir, "SASRec", "split", SPLIT, benchmark_filename=["train", "valid", "test"],
                 alias_of_item_id=["item_id_list"])
    ds = SequentialDataset(cfg)  # RecBole's own class (our runner splits sequential data by time instead)
    assert tokens(ds, "item_id") == ["[PAD]", "i2", "i3", "i4", "i1"]
    assert ds.inter_feat["item_length"].tolist() == [1, 2, 2, 3]
    train, valid, test = ds.build()
    assert train.inter_feat["item_id_list"].tolist() == [[4, 0, 0], [1, 4, 0]]
    assert train.inter_feat["item_id"].tolist() == [1, 2]
    assert valid.inter_feat["item_id_list"].tolist() == [[4, 1, 0]] and valid.inter_feat["item_length"].tolist() == [2]
    assert test.inter_feat["item_id_list"].tolist() == [[1, 4, 2]] and test.inter_feat["item_id"].tolist() == [3]
    with pytest.raises(ValueError, match="benchmark_filename: sequential models read one"):
        create_dataset(cfg)


def test_any_submodule_applies_compat_first():
    """A fresh interpreter that imports one submodule gets the patched RecBole dataset and numpy aliases."""
    code = ("import recbole_specgr.evaluation, numpy, recbole.data.dataset as d, recbole_specgr.compat as c; "
            "assert numpy.float_ is numpy.float64; "
            "assert d.Dataset._remap is c.PandasCompatDatasetMixin._remap; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.stdout.strip() == "ok", out.stderr[-2000:]


def test_only_a_sequential_interaction_time_must_be_a_number(run_dir):
    """A general model never orders by time: its token time loads as before; an item file's timestamp is no role."""
    token_time = TOY["toy.inter"][0].replace("timestamp:float", "timestamp:token")
    files = {**TOY, "toy.inter": [token_time, *TOY["toy.inter"][1:]],
             "toy.item": [TOY["toy.item"][0] + "\ttimestamp:token", *(row + "\tt" for row in TOY["toy.item"][1:])]}
    ds = create_dataset(config(run_dir, "BPR", "toy", files))
    assert len(ds.inter_feat) == 4
    with pytest.raises(ValueError, match=r"toy\.inter: field 'timestamp' \(TIME_FIELD\) has type token; expected float"):
        SequentialDataset(config(run_dir / "seq", "SASRec", "toy", files))


def test_csv_quoted_fields_are_unquoted_and_the_others_read_as_written(tmp_path):
    """One text that merely starts with a quote made every line be read literally, CSV-quoted ones included."""
    from recbole_specgr.compat import _read_atomic_file

    path = tmp_path / "q.item"
    path.write_text('item_id:token\ttitle:token\ni1\t"6"" Cable"\ni2\t"Weird Al" Live\ni3\t"""Quoted"" title"\n'
                    'i4\t\ni5\tplain "inner" quotes\n', encoding="utf-8")
    columns = ["item_id:token", "title:token"]
    df = _read_atomic_file(str(path), "\t", columns, dict.fromkeys(columns, str), "utf-8")
    assert df["title:token"].tolist()[:3] == ['6" Cable', '"Weird Al" Live', '"Quoted" title']
    assert pd.isna(df["title:token"][3]) and df["title:token"][4] == 'plain "inner" quotes'
