"""
recbole_specgr.atomic
#####################
Every artifact this package writes (caches, checkpoints, converted datasets, result files) goes through
:func:`atomic_write`: a temporary file in the target's folder, moved into place only once fully written, so a crash or
an error never leaves a half-written file behind. A process killed outright (SIGKILL, out of memory) cannot clean up
its temporary file; the next write into that folder removes it (temporary names carry the writer's PID, and only
files of processes that no longer run are removed, so concurrent writers are safe).
"""

import contextlib
import glob
import os
import tempfile

TMP_PREFIX = ".tmp_"


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def remove_stale_temporaries(folder):
    """Delete the temporary files in ``folder`` left by writers that were killed (their PID no longer runs)."""
    for path in glob.glob(os.path.join(folder, f"{TMP_PREFIX}*_*.part")):
        pid = os.path.basename(path)[len(TMP_PREFIX):].split("_", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)


def check_writable(path):
    """OSError naming ``path`` unless its folder exists (it is created) and can be written, for checking a file
    that will only be written at the end of a long run (e.g. a result file) before the run starts."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as err:
        raise OSError(err.errno, f"cannot write {path}: {err.strerror} ({folder})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OSError(13, f"cannot write {path}: its folder {folder} is not writable")
    if os.path.isdir(path):
        raise OSError(21, f"cannot write {path}: it is a folder (give a file name)")


def _umask():
    """The process's umask, read without changing it where Linux shows it (os.umask sets it for a moment, and a
    file another thread creates meanwhile would get mode 0666)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temporary_path(path):
    """A new temporary file beside ``path``, named so that :func:`remove_stale_temporaries` removes it once its
    writer is dead (for writers that move several files into place together); stale ones are removed first."""
    check_writable(path)
    folder = os.path.dirname(os.path.abspath(path))
    remove_stale_temporaries(folder)
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f"{TMP_PREFIX}{os.getpid()}_", suffix=".part")
    except OSError as err:
        raise OSError(err.errno, f"cannot write {path}: {err.strerror}") from None
    os.close(fd)
    return tmp


def move_into_place(tmp, path):
    """Give the written temporary file ``tmp`` the permissions ``open`` would have given ``path`` (0666 less the umask,
    not mkstemp's 0600) and move it there in one step."""
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_write(path, mode="wb", **open_kwargs):
    """``with atomic_write(path) as f: ...`` writes ``f`` to ``path`` atomically (``os.replace``); on any error the
    temporary file is removed and ``path`` is left as it was. The file gets the permissions ``open`` would give it
    (0666 less the umask), not the temporary file's 0600; an OSError names ``path``, not the temporary file."""
    tmp = temporary_path(path)
    try:
        with open(tmp, mode, **open_kwargs) as f:
            yield f
        move_into_place(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
