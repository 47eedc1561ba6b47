"""Old checkpoints (a pickled RecBole Config inside) are refused by load_checkpoint and rewritten as plain data by
``python -m recbole_specgr.upgrade_checkpoint`` only when the user says the file is trusted."""

import pytest
import torch

from recbole_specgr.compat import load_checkpoint
from recbole_specgr.config import Config, config_from_saved, plain_config
from recbole_specgr.upgrade_checkpoint import main


@pytest.fixture
def old_checkpoint(run_dir):
    """What RecBole's Trainer (and this package before plain-data checkpoints) saved: the whole Config object, and a
    module among the other parameters (RecBole's FDSA lists its feature embedding there)."""
    config = Config(model="SASRec", dataset="ml-100k", config_dict={"hidden_size": 32, "seed": 7})
    state = {"config": config, "epoch": 3, "state_dict": {"w": torch.arange(6.0).view(2, 3)},
             "other_parameter": {"layer": torch.nn.Linear(2, 2), "note": [1, 2]}, "optimizer": {}}
    path = run_dir / "old.pth"
    torch.save(state, path)
    return path, config


def test_old_checkpoint_is_refused_with_the_upgrade_command(old_checkpoint):
    path, _ = old_checkpoint
    with pytest.raises(ValueError, match=r"refused to load.*python -m recbole_specgr\.upgrade_checkpoint"):
        load_checkpoint(path)


def test_upgrade_needs_trusted_and_then_loads_as_plain_data(old_checkpoint, run_dir, exits_with_error):
    path, config = old_checkpoint
    target = run_dir / "new.pth"
    exits_with_error("can run code; pass --trusted", main, [str(path), str(target)])
    assert not target.exists()
    main([str(path), str(target), "--trusted"])
    new = load_checkpoint(target)
    assert new["config"] == plain_config(config) and new["config"]["hidden_size"] == 32
    assert config_from_saved(new["config"])["seed"] == 7  # the Config rebuilds from it
    assert torch.equal(new["state_dict"]["w"], torch.arange(6.0).view(2, 3)) and new["epoch"] == 3
    assert new["other_parameter"] == {"note": [1, 2]}  # the module's weights live in the state dict


def test_upgrade_in_place_and_bad_input(old_checkpoint, run_dir, exits_with_error):
    path, _ = old_checkpoint
    main([str(path), str(path), "--trusted"])
    assert load_checkpoint(path)["config"]["model"] == "SASRec"
    not_a_checkpoint = run_dir / "list.pth"
    torch.save([1, 2, 3], not_a_checkpoint)
    other_is_a_list = run_dir / "other.pth"
    torch.save({"config": {"model": "SASRec"}, "state_dict": {}, "other_parameter": [1]}, other_is_a_list)
    for source, message in ((not_a_checkpoint, r"list\.pth: expected a RecBole checkpoint"),
                            (run_dir / "nope.pth", "no such"),
                            (other_is_a_list, r"other\.pth: other_parameter: expected a mapping")):
        exits_with_error(message, main, [str(source), str(run_dir / "out.pth"), "--trusted"])
        assert not (run_dir / "out.pth").exists()
    assert not list(run_dir.glob("*.part"))  # nothing half-written
