"""User-facing failures. The entry point turns each into one line on stderr and exit code 2.

Tracebacks are for bugs only: anything a user can cause by a config value, a path or a file
raises one of these, naming the key and what is allowed.
"""

import os

NAME_MAX = 255  # bytes in a file or folder name, on the common filesystems (ext4, xfs, btrfs, APFS, NTFS)
NAME_ALLOWED = f"a name of at most {NAME_MAX} bytes (UTF-8)"


class UserError(Exception):
    """A mistake in the input, reported as `key: problem; allowed: values`."""

    def __init__(self, key: str, problem: str, allowed: str | None = None):
        self.key, self.problem, self.allowed = key, problem, allowed
        message = f"{key}: {problem}"
        if allowed:
            message += f"; allowed: {allowed}"
        super().__init__(message)


class ConfigError(UserError):
    """A config value that is out of range or inconsistent with another."""


class DataError(UserError):
    """A corpus that is missing, unreadable or too short."""


class CheckpointError(UserError):
    """A checkpoint that is missing, corrupt or of another architecture."""


def require_plain_name(key: str, value: str) -> None:
    """A file or folder name inside the run folder: not empty, no path separator, not `.` or `..`."""
    if not value or "/" in value or "\\" in value or value in (".", "..") or "\0" in value:
        raise ConfigError(key, f"{value!r} is not a plain name", "a non-empty name without path separators")
    require_short_name(key, value)


def require_short_name(key: str, name: str) -> None:
    """A file or folder name the filesystem accepts: at most NAME_MAX bytes."""
    if len(os.fsencode(name)) > NAME_MAX:
        shown = name if len(name) <= 40 else name[:37] + "..."
        raise ConfigError(key, f"the name {shown!r} is {len(os.fsencode(name))} bytes long", NAME_ALLOWED)


class RelativeConfigError(ConfigError, ValueError):
    """A value refused by a config dataclass used at several places (the run's `sample` section and
    the root of `python -m trainer.sample`): its key is relative to the dataclass, and the config
    contract prefixes the key of the node it sits at (pydantic hands a ValueError back to it)."""
