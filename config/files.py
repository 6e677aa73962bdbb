"""Reading files that a config names (certificates, token files) with errors that name the setting.

Every file a user points the collector at is read through :func:`read_bounded`: only regular
files (``/dev/zero`` would never end, a FIFO would block start until someone writes to it) and
only up to a size limit (a 64 MB "config" is a mistake or an attack, not a config), so a wrong
path costs one clear line, never a hang or a MemoryError.
"""

from __future__ import annotations

import os
import stat

__all__ = ["read_config_file", "read_bounded", "CONFIG_FILE_LIMIT", "SIDE_FILE_LIMIT"]

CONFIG_FILE_LIMIT = 256 << 10  # a real config is a few KB; pure-Python PyYAML (for error messages) parses ~70 KB/s
SIDE_FILE_LIMIT = 1 << 20  # certificate chains, keys, CA bundles, token files


def read_bounded(path: str, limit: int) -> bytes:
    """The bytes of the regular file ``path``; OSError with a one-line reason otherwise.

    Opened with O_NONBLOCK so that opening a FIFO returns at once (and is then refused) instead of
    waiting for a writer; the size is checked on the open descriptor, and the read stops at
    ``limit + 1`` bytes in case the file grows meanwhile.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"not a regular file ({_kind(info.st_mode)})")
        if info.st_size > limit:
            raise OSError(f"file too large ({info.st_size} bytes, the limit is {limit})")
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise OSError(f"file too large (more than {limit} bytes)")
    return data


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a file"


def read_config_file(path: str, setting: str, error: type[Exception] = OSError,
                     limit: int = SIDE_FILE_LIMIT) -> bytes:
    """The file's bytes, or ``error("cannot read <setting> '<path>': <reason>")``.

    Receivers raise OSError (a startup failure like a taken port); exporters raise ValueError
    (their constructors report config problems that way).
    """
    try:
        return read_bounded(path, limit)
    except OSError as exc:
        raise error(f"cannot read {setting} {path!r}: {exc.strerror or exc}") from None
