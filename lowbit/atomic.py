"""Atomic output files: written beside the target under a hidden temporary name, flushed to disk,
and renamed over the target only when complete. An error or Ctrl-C leaves nothing behind; a hard
kill leaves only the hidden temporary file."""
import contextlib
import os
import tempfile


@contextlib.contextmanager
def atomic_output(path, prefix=".lowbit-"):
    """Yields a binary file object; on success its contents replace `path`."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path)) or "."
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w+b") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
