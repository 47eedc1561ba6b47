"""
recbole_specgr.upgrade_checkpoint
#################################
Rewrite a checkpoint that holds pickled objects (RecBole's own trainers, and this package before its checkpoints
became plain data, save the whole ``Config``) as one that :func:`recbole_specgr.compat.load_checkpoint` accepts: the
configuration as :func:`recbole_specgr.config.plain_config`, ``other_parameter`` without modules, everything else as
it was. Reading the old file unpickles it, which can run code from it: only do this for files you made yourself.

    python -m recbole_specgr.upgrade_checkpoint saved/UniSRec-old.pth saved/UniSRec-old-plain.pth --trusted
"""

import argparse
import io
import os

import torch

from recbole_specgr import compat  # noqa: F401  (must precede recbole imports)
from recbole_specgr.atomic import atomic_write
from recbole_specgr.cli import exit_with_error
from recbole_specgr.config import plain_config

REQUIRED_KEYS = ("config", "state_dict")


def upgrade(checkpoint: dict) -> dict:
    """The plain-data form of an unpickled checkpoint ``checkpoint`` (a dict with ``config`` and ``state_dict``)."""
    if not isinstance(checkpoint, dict) or any(key not in checkpoint for key in REQUIRED_KEYS):
        keys = sorted(checkpoint) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ValueError(f"expected a RecBole checkpoint (a dict with {', '.join(REQUIRED_KEYS)}), got {keys}")
    config = checkpoint["config"]
    if not isinstance(config, dict):
        if not hasattr(config, "final_config_dict"):
            raise ValueError(f"config: expected a RecBole Config or a dict, got {type(config).__name__}")
        config = plain_config(config)
    others = checkpoint.get("other_parameter") or {}
    if not isinstance(others, dict):
        raise ValueError(f"other_parameter: expected a mapping of names to values, got {type(others).__name__}")
    others = {name: value for name, value in others.items() if not isinstance(value, torch.nn.Module)}
    return {**checkpoint, "config": config, "other_parameter": others}


def upgrade_file(source: str, target: str) -> None:
    """Read ``source`` (unpickling it), write its plain-data form to ``target`` (may equal ``source``) after checking
    that it loads with ``weights_only=True`` (as :func:`~recbole_specgr.compat.load_checkpoint` reads it); on any error
    nothing is written."""
    if not os.path.isfile(source):
        raise ValueError(f"{source}: no such checkpoint file")
    try:
        old = torch.load(source, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001  (any unpickling failure is the same bad input for the user)
        raise ValueError(f"{source}: not a readable torch checkpoint ({type(err).__name__}: {err})") from None
    try:
        new = upgrade(old)
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from None
    buffer = io.BytesIO()
    torch.save(new, buffer)
    buffer.seek(0)
    try:
        torch.load(buffer, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"{source}: still holds pickled objects after the upgrade ({str(err).splitlines()[0]})") \
            from None
    with atomic_write(target) as f:
        f.write(buffer.getvalue())


def main(argv=None):
    parser = argparse.ArgumentParser(description="Rewrite an old checkpoint (pickled Config) as plain data.")
    parser.add_argument("source", help="the old checkpoint (.pth)")
    parser.add_argument("target", help="where to write the plain-data checkpoint (may be the source)")
    parser.add_argument("--trusted", action="store_true",
                        help="required: you made SOURCE yourself (reading it unpickles it, which can run code)")
    args = parser.parse_args(argv)
    try:
        if not args.trusted:
            raise ValueError(f"{args.source}: reading it unpickles it, which can run code; pass --trusted if you made "
                             f"it")
        upgrade_file(args.source, args.target)
    except (OSError, ValueError) as err:
        exit_with_error(err)
    print(f"{args.target}: written, loads with weights_only=True")


if __name__ == "__main__":
    main()
