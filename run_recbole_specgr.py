"""Run a recbole-specgr or RecBole model: python run_recbole_specgr.py --model=SpecGRPP --dataset=ml-100k

Any other ``--key=value`` reaches RecBole's Config. A user mistake (unknown name, missing or malformed file, bad
value) ends with one line ``error: …`` and exit status 2; ``--debug`` shows the traceback instead.
"""
import argparse
import sys
from importlib import resources

import yaml


def known_names():
    """This package's models and bundled dataset settings, for ``--help``."""
    from recbole_specgr.utils import plugin_model_names

    datasets = sorted(entry.name[:-len(".yaml")] for entry in resources.files("recbole_specgr.properties.dataset")
                      .iterdir() if entry.name.endswith(".yaml"))
    return plugin_model_names(), datasets


def main(argv=None):
    models, datasets = known_names()
    parser = argparse.ArgumentParser(
        allow_abbrev=False,  # --config=x would be --config_files here and an unknown key to RecBole's reader
        description="Train and evaluate a model on the inductive split (overall / in-sample / unseen results).",
        epilog=f"models: {', '.join(models)} and any RecBole sequential model (SASRec, FDSA, S3Rec, ...). "
               f"datasets with bundled settings: {', '.join(datasets)}. Any other --key=value sets a config key.")
    parser.add_argument("--model", "-m", default="SpecGRPP", help="model name(s), comma-separated to compare")
    parser.add_argument("--dataset", "-d", default="ml-100k")
    parser.add_argument("--config_files", default=None, help="space-separated YAML files")
    parser.add_argument("--result_json", default=None, help="write the result (metrics, timings, config) here")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    args, settings = parser.parse_known_args(argv)
    if args.debug:  # RecBole's Config parses sys.argv itself and does not know this flag
        sys.argv = [arg for arg in sys.argv if arg != "--debug"]
    files = args.config_files.strip().split(" ") if args.config_files else None
    from recbole_specgr import config

    checked = config.CHECK_COMMAND_LINE_KEYS
    config.CHECK_COMMAND_LINE_KEYS = True  # this command line holds only settings: Config checks their keys
    try:
        run(args, settings, files)
    except (ValueError, KeyError, OSError, yaml.YAMLError) as err:
        if args.debug:
            raise
        from recbole_specgr.cli import exit_with_error

        exit_with_error(err)
    finally:
        config.CHECK_COMMAND_LINE_KEYS = checked


def run(args, settings, files):
    """One model, or a comparison of several (exit status 1 when one of them fails)."""
    from recbole_specgr.config import split_setting
    from recbole_specgr.quick_start import run_recbole_specgr

    for arg in settings:  # RecBole's Config reads these from sys.argv; here only their form is checked
        if split_setting(arg) is None:
            raise ValueError(f"command line: expected --key=value, got {arg!r}")
    if "," in args.model:
        from recbole_specgr.compare import run_comparison

        _, failed = run_comparison(args.model.split(","), args.dataset, files, out_prefix=args.result_json)
        if failed:
            print(f"error: compare: {', '.join(failed)} failed (the log above has the reason)", file=sys.stderr)
            sys.exit(1)
    else:
        run_recbole_specgr(args.model, args.dataset, config_file_list=files, result_json=args.result_json)


if __name__ == "__main__":
    main()
