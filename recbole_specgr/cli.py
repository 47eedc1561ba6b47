"""
recbole_specgr.cli
##################
What the command-line tools share: a user mistake ends a command with one line ``error: …`` on stderr and exit
status 2, as argparse does (``run_recbole_specgr.py``, ``python -m recbole_specgr.compare``,
``recbole_specgr.new_items``, ``recbole_specgr.upgrade_checkpoint``).
"""

import sys


def error_message(err: BaseException) -> str:
    """The first line of ``err``'s message (a KeyError's without the quotes str() adds; a YAML error's problem and
    where it is, whose first line is only PyYAML's context, e.g. "while scanning for the next token"; the exception's
    type when it has no message)."""
    problem, mark = getattr(err, "problem", None), getattr(err, "problem_mark", None)
    if problem and mark is not None:  # yaml.MarkedYAMLError
        return f"{problem} (line {mark.line + 1}, column {mark.column + 1})"
    text = err.args[0] if isinstance(err, KeyError) and err.args else err
    lines = str(text).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def error_line(err: BaseException) -> str:
    """``error: `` and :func:`error_message` of ``err``."""
    return f"error: {error_message(err)}"


def exit_with_error(err: BaseException) -> None:
    """Print :func:`error_line` of ``err`` to stderr and exit with status 2."""
    print(error_line(err), file=sys.stderr)
    sys.exit(2)
