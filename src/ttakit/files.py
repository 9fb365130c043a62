"""Writing a file so that a failure never leaves it empty or half-written.

Used for every file ttakit writes (predictions, policies, reports): the
text goes to a temporary file in the same folder, is flushed to disk, and is
then renamed over the target in one step (POSIX and Windows).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: str | Path, text: str | bytes) -> None:
    """Write ``text`` (UTF-8; unencodable characters backslash-escaped), or
    ``bytes`` as they are, to ``path`` all at once. The file keeps the mode of the one it replaces
    (else the mode a plain ``open()`` would give). Raises ``OSError`` when
    it cannot be written; ``path`` is then as it was."""
    path = Path(path)
    data = text if isinstance(text, bytes) else text.encode("utf-8", "backslashreplace")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:100]}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            mode = os.stat(path).st_mode & 0o7777
        else:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(tmp, mode)  # mkstemp makes it private (0600)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
