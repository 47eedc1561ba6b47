"""Every script in ``benchmarks/`` answers ``--help`` with its usage (argparse formats each help string with ``%``,
so one stray percent sign crashes ``--help`` while the script's runs still work)."""

import re
import sys
from pathlib import Path

import pytest

from conftest import BENCHMARKS, load_benchmark_script

SCRIPTS = sorted(path.stem for path in Path(BENCHMARKS).glob("*.py"))


def test_the_benchmark_folder_is_found():
    assert {"run_table", "bench_specgr_speed", "retune_specgr"} <= set(SCRIPTS)


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_prints_the_usage(name, monkeypatch, capsys):
    monkeypatch.syspath_prepend(BENCHMARKS)  # as when run as a script: bench_beam_size imports bench_gamma_sweep
    script = load_benchmark_script(name)
    monkeypatch.setattr(sys, "argv", [f"{name}.py", "--help"])
    with pytest.raises(SystemExit) as stopped:
        script.main()
    assert stopped.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: {name}.py")


def test_eval_versions_report_gives_best_median_and_per_repeat_ratios():
    report = load_benchmark_script("bench_eval_versions").report

    def row(repeat, code, valid_s, test_s):
        return {"repeat": repeat, "code": code, "valid_s": valid_s, "test_s": test_s, "valid_minflt": 0,
                "test_minflt": 0, "gamma": -2.0, "test_recall": 0.4}

    rows = [row(0, "old", 30.0, 10.0), row(0, "new", 15.0, 5.0), row(1, "new", 12.0, 4.0), row(1, "old", 40.0, 8.0),
            row(2, "old", 35.0, 10.0), row(2, "new", 20.0, 10.0)]
    text = report(rows, "old", "new", "python bench", threads=2)
    assert "torch threads per process: 2" in text
    assert "Best of each (valid + test): old 40.0 s, new 16.0 s — ratio **2.50×** (valid pass 2.50×, test pass 2.50×)" \
        in text
    assert "Median of each: old 45.0 s, new 20.0 s — ratio **2.25×**; per repeat (the two back to back): 2.00×, " \
           "3.00×, 1.50×." in text


def test_retune_refuses_a_source_it_cannot_read(tmp_path, monkeypatch, capsys):
    """A missing or malformed result JSON was a traceback; now one argparse error line, nothing written."""
    monkeypatch.syspath_prepend(BENCHMARKS)
    retune = load_benchmark_script("retune_specgr")
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "gone.json").write_text('{"checkpoint": "nowhere.pth"}')
    for source, message in (("missing.json", r"missing\.json: expected a run_table result JSON \(\[Errno 2\]"),
                            ("bad.json", r"bad\.json: expected a run_table result JSON \(Expecting"),
                            ("gone.json", r"gone\.json: its checkpoint 'nowhere\.pth' is not on this machine")):
        with pytest.raises(SystemExit) as stopped:
            retune.main([str(tmp_path / source), "--out", str(tmp_path / "out.json")])
        err = capsys.readouterr().err
        assert stopped.value.code == 2 and re.search(message, err) and "Traceback" not in err, err
    assert not (tmp_path / "out.json").exists()
