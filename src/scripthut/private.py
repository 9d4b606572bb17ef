"""Private files and folders: what ScriptHut creates belongs to its user alone.

Folders are created 0700 and files 0600 whatever the umask (the mode is set after
creation, so a umask of 0 or 002 on a shared login node changes nothing). Files that
already exist with group or other bits are tightened by `tighten` / `tighten_tree`,
which only ever remove those bits: the owner's bits (an executable script) are kept.
Symbolic links are never followed or changed.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
OPEN_BITS = 0o077  # group and other


def make_private_dirs(path: str | Path) -> None:
    """Create `path` and its missing parents, each 0700; existing folders are left alone."""
    missing: list[Path] = []
    current = Path(path)
    while not os.path.lexists(current) and current != current.parent:
        missing.append(current)
        current = current.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, PRIVATE_DIR)
        except FileExistsError:
            continue  # made meanwhile by someone else: theirs to set
        os.chmod(folder, PRIVATE_DIR)


def create_private_file(path: str | Path) -> None:
    """Create `path` empty and 0600 unless it exists; never through a symbolic link."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, PRIVATE_FILE)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, PRIVATE_FILE)
    finally:
        os.close(fd)


def tighten(path: str | Path) -> bool:
    """Remove group and other bits from `path` (not a symlink); whether it changed."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(info.st_mode) or not info.st_mode & OPEN_BITS:
        return False
    os.chmod(path, stat.S_IMODE(info.st_mode) & ~OPEN_BITS)
    return True


def tighten_tree(root: str | Path) -> int:
    """`tighten` `root` and everything under it (links not followed); how many changed."""
    changed = int(tighten(root))
    for folder, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            with contextlib.suppress(OSError):
                changed += tighten(os.path.join(folder, name))
    return changed


def is_private(path: str | Path) -> bool:
    """Whether `path` exists and has no group or other bits."""
    try:
        return not os.lstat(path).st_mode & OPEN_BITS
    except FileNotFoundError:
        return False
