"""Reading files that a config names (certificates, token files) with errors that name the setting."""

from __future__ import annotations

__all__ = ["read_config_file"]


def read_config_file(path: str, setting: str, error: type[Exception] = OSError) -> bytes:
    """The file's bytes, or ``error("cannot read <setting> '<path>': <reason>")``.

    Receivers raise OSError (a startup failure like a taken port); exporters raise ValueError
    (their constructors report config problems that way).
    """
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise error(f"cannot read {setting} {path!r}: {exc.strerror or exc}") from None
