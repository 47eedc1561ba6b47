"""
recbole_specgr.atomic
#####################
Every artifact this package writes (caches, checkpoints, converted datasets, result files) goes through
:func:`atomic_write`: a temporary file in the target's folder, moved into place only once fully written, so a crash or
an error never leaves a half-written file behind.
"""

import contextlib
import os
import tempfile


@contextlib.contextmanager
def atomic_write(path, mode="wb", **open_kwargs):
    """``with atomic_write(path) as f: ...`` writes ``f`` to ``path`` atomically (``os.replace``); on any error the
    temporary file is removed and ``path`` is left as it was."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp_", suffix=".part")
    try:
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
