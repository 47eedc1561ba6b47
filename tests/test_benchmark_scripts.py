"""Every script in ``benchmarks/`` answers ``--help`` with its usage (argparse formats each help string with ``%``,
so one stray percent sign crashes ``--help`` while the script's runs still work)."""

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
