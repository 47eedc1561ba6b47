"""Amazon Reviews 2023 converter (:mod:`recbole_specgr.data.amazon`) on the hand-made fixture in
``tests/fixtures/amazon/raw`` (category ``Video_Games``).

The fixture: 10 users, 15 items; train/valid/test files with 30/7/7 rows, one train row an exact duplicate and one train
row (user AM6L…, item B08FC5L3RG) with its two history items swapped. Items B09MZ4K1TB, B0B5WQ3L8N first appear in
valid, B0BN93L7QX, B0C1K7RZ2V only in test; B0C1K7RZ2V has no metadata row; B0NOTUSED1 has metadata but no review.
"""

import json
import os
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml

from recbole_specgr.data import amazon

FIXTURE_RAW = os.path.join(os.path.dirname(__file__), "fixtures", "amazon", "raw")
PROPERTIES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "properties", "dataset")
NAME = "amazon_games"
RAW_FILES = ["Video_Games.train.csv", "Video_Games.valid.csv", "Video_Games.test.csv", "meta_Video_Games.jsonl"]
T_VALID, T_TEST = 1641234567890, 1657000000123  # first timestamp of the valid / test file
ITEMS_IN_ORDER = [  # order of first appearance in train, valid, test
    "B08H75RTZ8", "B07PQM2K9L", "B00ZQ4PDGM", "B0BTY2V4JM", "B06XKZ1D4G", "B07R4DQ8ZS", "B01MTX7A2C", "0913212148",
    "B09V3HN1QD", "B08FC5L3RG", "B01N4HSTRK", "B09MZ4K1TB", "B0B5WQ3L8N", "B0BN93L7QX", "B0C1K7RZ2V",
]
OUTPUTS = [f"{NAME}.inter", f"{NAME}.item", f"{NAME}.raw.json", f"{NAME}.split.json"]


@pytest.fixture
def data_path(tmp_path):
    shutil.copytree(FIXTURE_RAW, tmp_path / NAME / "raw")
    return str(tmp_path)


def raw(data_path, name):
    return os.path.join(data_path, NAME, "raw", name)


def out(data_path, name):
    return os.path.join(data_path, NAME, name)


def edit_line(path, line_no, new_line):
    lines = open(path, encoding="utf-8").read().split("\n")
    lines[line_no - 1] = new_line
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))


def left_in_output_folder(data_path):
    return sorted(set(os.listdir(os.path.join(data_path, NAME))) - {"raw"})


def test_inter_rows(data_path, caplog):
    amazon.ensure_atomic_files(NAME, data_path)
    lines = open(out(data_path, f"{NAME}.inter"), encoding="utf-8").read().splitlines()
    assert lines[0] == "user_id:token\titem_id:token\trating:float\ttimestamp:float"
    rows = [line.split("\t") for line in lines[1:]]
    assert len(rows) == 43  # 30 + 7 + 7 CSV rows, less the duplicate
    assert lines[1] == "ATFJGVQ6KBNXJBTFQXKWOVOMPZOM\tB08H75RTZ8\t4.0\t1500450024946"  # first train row, ms kept
    assert lines.count("AEN4KHVDGAJGXBENYJQWX6HH7566\tB00ZQ4PDGM\t4.0\t1532640920943") == 1
    assert lines[-1] == "ATFJGVQ6KBNXJBTFQXKWOVOMPZOM\tB09MZ4K1TB\t5.0\t1669652980478"  # last test row
    assert len({r[0] for r in rows}) == 10
    assert list(dict.fromkeys(r[1] for r in rows)) == ITEMS_IN_ORDER
    times = np.array([int(r[3]) for r in rows])
    period = np.searchsorted([T_VALID, T_TEST], times, side="right")  # 0 train, 1 valid, 2 test
    assert np.bincount(period).tolist() == [29, 7, 7]
    with open(out(data_path, f"{NAME}.split.json")) as f:
        assert json.load(f) == {"split_timestamps": [T_VALID, T_TEST]}
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("dropped 1 exact duplicate" in m for m in warnings)
    assert any("1 of 43 rows have a history" in m for m in warnings)
    assert any("1 of 15 items have no row" in m for m in warnings)


def test_item_rows(data_path):
    amazon.ensure_atomic_files(NAME, data_path)
    lines = open(out(data_path, f"{NAME}.item"), encoding="utf-8").read().splitlines()
    assert lines[0].split("\t") == [
        "item_id:token", "title:token", "features:token", "description:token", "categories:token_seq", "store:token"
    ]
    by_id = {line.split("\t", 1)[0]: line for line in lines[1:]}
    assert list(by_id) == ITEMS_IN_ORDER  # only reviewed items (no B0NOTUSED1), unseen ones included
    # entities unescaped, tags and tab stripped, empty feature dropped, list joined with ". ", categories as tokens
    assert by_id["0913212148"] == (
        "0913212148\tSuper Mario's & Luigi's Adventure Deluxe\t"
        '"Play with up to 4 friends. Includes ""Bonus"" DLC. Rated E for Everyone"\t'
        "A classic platformer. Now in HD\tVideo_Games Nintendo_Switch Games\tNintendo"
    )
    assert by_id["B01N4HSTRK"] == "B01N4HSTRK\tPokémon Trainer Case\t\t\t\t"  # empty lists, null store
    assert by_id["B0C1K7RZ2V"] == "B0C1K7RZ2V\t\t\t\t\t"  # no metadata row
    assert by_id["B07PQM2K9L"].split("\t")[1] == "Charging Dock <2 Controllers>"  # "<2" is not a tag
    assert by_id["B0BN93L7QX"].split("\t")[4] == "Video_Games Retro_Gaming_&_Microconsoles"


def test_recbole_loads_the_atomic_files(data_path):
    from recbole.config import Config
    from recbole.data.dataset import Dataset  # RecBole's own class (compat patches its loading steps)
    from recbole.utils import FeatureType

    amazon.ensure_atomic_files(NAME, data_path)
    with open(os.path.join(PROPERTIES, f"{NAME}.yaml")) as f:
        config_dict = yaml.safe_load(f)
    config_dict.update(data_path=data_path, train_neg_sample_args=None, state="ERROR", show_progress=False)
    dataset = Dataset(Config(model="SASRec", dataset=NAME, config_dict=config_dict))

    assert (dataset.user_num, dataset.item_num, dataset.inter_num) == (11, 16, 43)  # + padding
    assert dataset.field2type["title"] == FeatureType.TOKEN
    assert dataset.field2type["categories"] == FeatureType.TOKEN_SEQ
    assert dataset.inter_feat["timestamp"].min() == 1500450024946
    item_feat = dataset.item_feat.set_index("item_id")

    def text(field, asin):
        return dataset.id2token(field, int(item_feat.loc[dataset.token2id("item_id", asin), field]))

    assert text("title", "B06XKZ1D4G") == '"Retro" 12" Arcade Stick'  # quotes survive the TSV round trip
    assert text("features", "0913212148") == 'Play with up to 4 friends. Includes "Bonus" DLC. Rated E for Everyone'
    categories = item_feat.loc[dataset.token2id("item_id", "B06XKZ1D4G"), "categories"]
    assert list(dataset.id2token("categories", categories)) == ["Video_Games", "PC", "Accessories", "Controllers"]


def test_dataset_yaml_matches_written_headers(data_path):
    amazon.ensure_atomic_files(NAME, data_path)
    for name in amazon.AMAZON_DATASETS:
        with open(os.path.join(PROPERTIES, f"{name}.yaml")) as f:
            config = yaml.safe_load(f)
        for suffix in ("inter", "item"):
            with open(out(data_path, f"{NAME}.{suffix}")) as f:
                fields = [column.split(":")[0] for column in f.readline().rstrip("\n").split("\t")]
            assert config["load_col"][suffix] == fields
        assert set(config["text_fields"]) <= set(fields)
        assert config["split_timestamps"] == "file" and config["field_separator"] == "\t"


def test_existing_atomic_files_are_kept(data_path):
    amazon.ensure_atomic_files(NAME, data_path)
    shutil.rmtree(os.path.join(data_path, NAME, "raw"))
    amazon.ensure_atomic_files(NAME, data_path)  # no raw files needed any more
    assert left_in_output_folder(data_path) == sorted(OUTPUTS)


def test_atomic_files_older_than_a_raw_file_are_converted_again(data_path, caplog):
    amazon.ensure_atomic_files(NAME, data_path)
    with caplog.at_level("INFO"):
        amazon.ensure_atomic_files(NAME, data_path)
    assert f"[DATA] {NAME}: using the atomic files in" in caplog.text
    before = open(out(data_path, f"{NAME}.inter"), encoding="utf-8").read()
    path = raw(data_path, "Video_Games.test.csv")
    with open(path, "a", encoding="utf-8") as f:  # one more test interaction, written after the conversion
        f.write("AUJZDEGXDNCF32EPF3DHODZDOCIS,B06XKZ1D4G,4.0,1690000000000,B00ZQ4PDGM\n")
    later = os.path.getmtime(out(data_path, f"{NAME}.inter")) + 10
    os.utime(path, (later, later))
    caplog.clear()
    with caplog.at_level("INFO"):
        amazon.ensure_atomic_files(NAME, data_path)
    assert "Video_Games.test.csv not the file the atomic files were converted from: converting again" in caplog.text
    after = open(out(data_path, f"{NAME}.inter"), encoding="utf-8").read()
    assert after.count("\n") == before.count("\n") + 1 and "1690000000000" in after


def test_a_raw_file_replaced_by_an_older_copy_is_converted_again(data_path, caplog):
    """tar -x, cp -p and rsync -a keep a file's old modification time: an edited meta file restored that way was
    older than the atomic files, which were kept with the old titles."""
    amazon.ensure_atomic_files(NAME, data_path)
    path = raw(data_path, "meta_Video_Games.jsonl")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    assert '"title": "Pokémon Trainer Case"' in text
    with open(path, "w", encoding="utf-8") as f:
        f.write(text.replace('"title": "Pokémon Trainer Case"', '"title": "Pokémon Travel Case"'))
    os.utime(path, (946684800, 946684800))  # 2000-01-01: long before the conversion
    caplog.clear()
    with caplog.at_level("INFO"):
        amazon.ensure_atomic_files(NAME, data_path)
    assert "meta_Video_Games.jsonl not the file the atomic files were converted from" in caplog.text
    assert "Pokémon Travel Case" in open(out(data_path, f"{NAME}.item"), encoding="utf-8").read()
    caplog.clear()
    with caplog.at_level("INFO"):
        amazon.ensure_atomic_files(NAME, data_path)  # converted from these files now: kept
    assert f"[DATA] {NAME}: using the atomic files in" in caplog.text


def test_cli_errors_are_one_line(data_path, capsys):
    edit_line(raw(data_path, "Video_Games.train.csv"), 6, "AB5WKH7DNSIPZZ7FK4ZRI3R2WYOJ,B06XKZ1D4G,four,1504609018606,")
    with pytest.raises(SystemExit) as stopped:
        amazon.main(["--dataset", NAME, "--data_path", data_path])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and err.count("\n") == 1
    assert err.startswith("error: ") and "train.csv: line 6: rating must be a number, got 'four'" in err


def test_cli_summary(data_path, capsys):
    amazon.main(["--dataset", NAME, "--data_path", data_path])
    assert capsys.readouterr().out == (
        f"{NAME}: 10 users, 15 items, 43 interactions, split_timestamps (ms) [{T_VALID}, {T_TEST}]\n"
    )


@pytest.mark.parametrize("file, line_no, new_line, message", [
    ("Video_Games.train.csv", 1, "user_id,parent_asin,rating,timestamp", r"train\.csv: line 1: header must be"),
    ("Video_Games.valid.csv", 1, "user_id,item_id,rating,timestamp,history", r"valid\.csv: line 1: header must be"),
    ("Video_Games.train.csv", 4, "A2JHTLGMXGEDN73U55XTPLPFT7V4,B00ZQ4PDGM,2.0,1502412609345,,",
     r"train\.csv: line 4: expected 5 comma-separated fields .* found 6"),
    ("Video_Games.valid.csv", 3, "AM6L3VFZ5ZFKKIBJ5J6WJIBAGI3M,B09MZ4K1TB,5.0,1643183510326",
     r"valid\.csv: line 3: expected 5 comma-separated fields .* found 4"),
    ("Video_Games.test.csv", 5, "", r"test\.csv: line 5: expected 5"),
    ("Video_Games.train.csv", 6, "AB5WKH7DNSIPZZ7FK4ZRI3R2WYOJ,B06XKZ1D4G,four,1504609018606,",
     r"train\.csv: line 6: rating must be a number, got 'four'"),
    ("Video_Games.train.csv", 6, "AB5WKH7DNSIPZZ7FK4ZRI3R2WYOJ,B06XKZ1D4G,nan,1504609018606,",
     r"train\.csv: line 6: rating must be a number, got 'nan'"),
    ("Video_Games.train.csv", 3, "ATFJGVQ6KBNXJBTFQXKWOVOMPZOM,B07PQM2K9L,3.0,-1501617914448,B08H75RTZ8",
     r"train\.csv: line 3: timestamp must be a non-negative integer"),
    ("Video_Games.test.csv", 2, "AUJZDEGXDNCF32EPF3DHODZDOCIS,B0BN93L7QX,5.0,2022-07-05,B00ZQ4PDGM",
     r"test\.csv: line 2: timestamp must be a non-negative integer"),
    ("Video_Games.valid.csv", 8, "ATFJGVQ6KBNXJBTFQXKWOVOMPZOM,,5.0,1654675906670,B08H75RTZ8 B07PQM2K9L",
     r"valid\.csv: line 8: parent_asin must be a non-empty id"),
    ("Video_Games.valid.csv", 2, "AUJZDEGXDNCF32EPF3DHODZDOCIS,B09MZ4K1TB,2.0,1541345778568,B00ZQ4PDGM",
     r"train\.csv: latest timestamp 1541345778569 is after the first timestamp 1541345778568 .* not a clean time"),
    ("Video_Games.test.csv", 2, "AUJZDEGXDNCF32EPF3DHODZDOCIS,B0BN93L7QX,5.0,1657000000,B00ZQ4PDGM",
     r"valid\.csv: latest timestamp \d+ is after the first timestamp 1657000000 of .*test\.csv; the files are not a "
     r"clean time split \(one looks like seconds, the other like milliseconds"),
    ("Video_Games.train.csv", 6, "AB5WKH7D\tNSIPZZ7FK4ZRI3R2WYOJ,B06XKZ1D4G,4.0,1504609018606,",
     r"train\.csv: line 6: user_id must be free of tabs and carriage returns"),
    ("Video_Games.train.csv", 6, "AB5WKH7DNSIPZZ7FK4ZRI3R2WYOJ,B06XKZ1D4G,4.0,99999999999999999999999,",
     r"train\.csv: line 6: timestamp must be a non-negative integer"),
    ("meta_Video_Games.jsonl", 3, '{"title": "Broken", "parent_asin": "B06XKZ1D4G"',
     r"meta_Video_Games\.jsonl: line 3: invalid JSON"),
    ("meta_Video_Games.jsonl", 4, '["B07PQM2K9L"]', r"meta_Video_Games\.jsonl: line 4: expected a JSON object"),
    ("meta_Video_Games.jsonl", 6, '{"parent_asin": "B08FC5L3RG", "features": "a", "categories": {"a": 1}}',
     r"meta_Video_Games\.jsonl: line 6: categories must be a list of strings or null"),
])
def test_malformed_input_fails_cleanly(data_path, file, line_no, new_line, message):
    edit_line(raw(data_path, file), line_no, new_line)
    with pytest.raises(ValueError, match=message) as err:
        amazon.ensure_atomic_files(NAME, data_path)
    assert "\n" not in str(err.value)
    assert left_in_output_folder(data_path) == []  # nothing half-written


def test_failed_write_leaves_no_files(data_path, monkeypatch):
    write_tsv = amazon._write_tsv

    def fail_on_inter(header, df, path):
        if header[0].startswith("user_id"):
            with open(path, "w") as f:
                f.write("user_id:token\tit")  # a partial file, then the disk fills up
            raise OSError("No space left on device")
        write_tsv(header, df, path)

    monkeypatch.setattr(amazon, "_write_tsv", fail_on_inter)
    with pytest.raises(OSError, match="No space left"):
        amazon.ensure_atomic_files(NAME, data_path)
    assert left_in_output_folder(data_path) == []


def test_a_killed_conversions_temporary_files_are_removed_by_the_next_one(data_path):
    """Temporary files follow :mod:`recbole_specgr.atomic`'s naming: a conversion killed outright leaves its
    temporary files behind, and the next conversion into the folder removes them (they were kept for good)."""
    folder = os.path.join(data_path, NAME)
    os.makedirs(folder, exist_ok=True)
    stale = os.path.join(folder, ".tmp_999999999_abc.part")  # a writer process that no longer runs
    with open(stale, "w") as f:
        f.write("user_id:token\tit")
    amazon.ensure_atomic_files(NAME, data_path)
    assert not os.path.exists(stale)
    assert left_in_output_folder(data_path) == sorted(OUTPUTS)


def test_missing_files_offline_give_one_clear_error(tmp_path, monkeypatch):
    from huggingface_hub.errors import LocalEntryNotFoundError

    def offline(**kwargs):
        raise LocalEntryNotFoundError("cannot reach the hub")

    monkeypatch.setattr(amazon, "hf_hub_download", offline)
    with pytest.raises(FileNotFoundError) as err:
        amazon.ensure_atomic_files(NAME, str(tmp_path))
    message = str(err.value)
    assert "\n" not in message
    for name in RAW_FILES:
        assert name in message
    assert os.path.join(str(tmp_path), NAME, "raw") in message
    assert left_in_output_folder(str(tmp_path)) == []


def test_missing_files_are_downloaded_under_their_published_names(tmp_path, monkeypatch):
    calls = []

    def fake_download(repo_id, repo_type, filename, local_dir):  # mimics hf_hub_download(local_dir=...)
        calls.append((repo_id, repo_type, filename))
        target = os.path.join(local_dir, filename)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(os.path.join(FIXTURE_RAW, os.path.basename(filename)), target)
        return target

    monkeypatch.setattr(amazon, "hf_hub_download", fake_download)
    os.makedirs(tmp_path / NAME / "raw")
    shutil.copyfile(os.path.join(FIXTURE_RAW, RAW_FILES[0]), tmp_path / NAME / "raw" / RAW_FILES[0])  # already there
    amazon.ensure_atomic_files(NAME, str(tmp_path))

    assert calls == [
        ("McAuley-Lab/Amazon-Reviews-2023", "dataset", "benchmark/5core/timestamp_w_his/Video_Games.valid.csv"),
        ("McAuley-Lab/Amazon-Reviews-2023", "dataset", "benchmark/5core/timestamp_w_his/Video_Games.test.csv"),
        ("McAuley-Lab/Amazon-Reviews-2023", "dataset", "raw/meta_categories/meta_Video_Games.jsonl"),
    ]
    assert sorted(os.listdir(tmp_path / NAME / "raw")) == sorted(RAW_FILES)  # hub sub-folders removed
    assert left_in_output_folder(str(tmp_path)) == sorted(OUTPUTS)


def test_unknown_dataset_name(tmp_path):
    with pytest.raises(ValueError, match="dataset: unknown Amazon dataset 'amazon_books'"):
        amazon.ensure_atomic_files("amazon_books", str(tmp_path))


@pytest.mark.parametrize("histories, expected", [
    (["", "x", "x y", "x y z"], 0),
    (["", "x", "y", "x y z"], 1),  # one wrong row, the next one right again
    (["", "q", "q y", "q y z"], 3),  # consistent with each other, all built on a wrong start
    (["x", "x", "x y", "x y z"], 1),  # the first row must have an empty history; the others are right
    (["", "y x", "x y", "x y z"], 1),
])
def test_count_history_mismatches(histories, expected):
    # user u: x, y, z, w in time order (given shuffled); user v: p, q, always right
    inter = pd.DataFrame({
        "user_id": ["u", "v", "u", "u", "v", "u"],
        "parent_asin": ["z", "p", "x", "y", "q", "w"],
        "timestamp": [30, 5, 10, 20, 6, 40],
        "history": [histories[2], "", histories[0], histories[1], "p", histories[3]],
    })
    assert amazon.count_history_mismatches(inter) == expected


def test_interactions_of_one_timestamp_follow_their_history():
    """User u rated y and x in the same millisecond; the file lists y first, but the history says x came first (y's
    history holds x). The tie is ordered by history; every other row keeps its place."""
    inter = pd.DataFrame({
        "user_id": ["u", "v", "u", "u", "v"],
        "parent_asin": ["w", "p", "y", "x", "q"],
        "timestamp": [10, 5, 20, 20, 6],
        "history": ["", "", "w x", "w", "p"],
    })
    assert amazon.count_history_mismatches(inter) == 2
    ordered = amazon.order_ties_by_history(inter)
    assert ordered["parent_asin"].tolist() == ["w", "p", "x", "y", "q"]
    assert amazon.count_history_mismatches(ordered) == 0


def test_prepare_converts_only_the_amazon_benchmarks_and_names_a_dataset_folder_given_as_data_path(data_path, tmp_path):
    from recbole_specgr.data.prepare import prepare_data_path

    # a user's own atomic files under an amazon_* name load as they are (they went to the converter: "unknown Amazon
    # dataset 'amazon_mine'")
    mine = tmp_path / "own" / "amazon_mine"
    mine.mkdir(parents=True)
    (mine / "amazon_mine.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\nu\ti\t1\n")
    config = {"dataset": "amazon_mine", "data_path": str(mine), "cache_dir": str(tmp_path / "cache")}
    prepare_data_path(config)
    assert config["data_path"] == str(mine)
    # data_path set to the benchmark's own folder: Amazon's converter made <it>/amazon_games/raw and downloaded there
    nested = os.path.join(data_path, NAME, NAME)
    with pytest.raises(ValueError, match=rf"^data_path: {re.escape(os.path.join(data_path, NAME))} is the "
                                         rf"'{NAME}' folder itself; set data_path to the folder above it, "
                                         rf"{re.escape(str(data_path))}$"):
        prepare_data_path({"dataset": NAME, "data_path": nested, "cache_dir": str(tmp_path / "cache")})
    assert not os.path.exists(nested)



@pytest.mark.parametrize("cwd, given", [("", NAME), ("", NAME + "/"), (NAME, ".")])
def test_a_relative_data_path_naming_the_dataset_folder_is_refused(data_path, monkeypatch, tmp_path, cwd, given):
    """From the data folder, or inside the dataset's own: the message suggested an empty folder, or none came and
    the converter made <dataset>/<dataset>/raw."""
    from recbole_specgr.data.prepare import prepare_data_path

    monkeypatch.chdir(os.path.join(data_path, cwd))
    folder = os.path.join(given, NAME)  # what RecBole makes of data_path
    with pytest.raises(ValueError, match=rf"^data_path: {re.escape(os.path.join(data_path, NAME))} is the "
                                         rf"'{NAME}' folder itself; set data_path to the folder above it, "
                                         rf"{re.escape(str(data_path))}$"):
        prepare_data_path({"dataset": NAME, "data_path": folder, "cache_dir": str(tmp_path / "cache")})
    assert not os.path.exists(os.path.join(data_path, NAME, NAME))
