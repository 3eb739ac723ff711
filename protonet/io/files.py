"""Atomic file writes: a temporary file in the same directory, flushed, fsynced, renamed.

A crash or a kill during a write leaves either the old file or the new one under the final
name, never half a file.
"""

import os
import tempfile

from ..errors import ProtonetError


def _umask_mode():
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


# mkstemp creates 0600 files; a written model or database file gets the usual permissions.
_FILE_MODE = _umask_mode()


def atomic_write_bytes(path, payload):
    """Write ``payload`` to ``path`` atomically."""

    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(payload)

    atomic_writer(path, write)


def atomic_writer(path, write):
    """Call ``write(tmp_path)`` to produce the file, then rename it over ``path`` atomically."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp",
                                   dir=directory)
        os.close(fd)
    except OSError as err:
        raise ProtonetError(f"cannot write here: {err.strerror}", file=path) from None
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException as err:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(err, OSError):   # a full disk, a read-only file system (h5py's too)
            raise ProtonetError(f"cannot write: {_reason(err)}", file=path) from None
        raise


def _reason(err):
    """One line saying why a write failed (h5py's OSErrors carry a multi-line dump)."""
    if err.errno:
        return os.strerror(err.errno)
    return (err.strerror or str(err)).strip().splitlines()[0]
