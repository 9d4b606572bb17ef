"""The data directory and the database are private to their user from the moment they exist.

- The database file is created 0600 (`os.open`, before SQLite opens it). SQLite creates
  `-wal` and `-shm` with the permissions of the database file, whatever the umask, so
  they are 0600 too; nothing has to be pre-created or any process-wide umask changed.
- Folders ScriptHut makes are 0700 (`private.make_private_dirs`).
- A data directory made by an earlier version (or by hand) with group or other bits is
  tightened at start: the whole tree the first time (while the folder itself is still
  open), then only the top (folder, database files, logs folder): nothing below a 0700
  folder can be reached by another user. One log line says what changed.
"""

from __future__ import annotations

import logging
from pathlib import Path

from scripthut.private import create_private_file, make_private_dirs, tighten, tighten_tree

log = logging.getLogger("scripthut.store")

DB_FILES = ("scripthut.db", "scripthut.db-wal", "scripthut.db-shm", "scripthut.db-journal")
TOP_FOLDERS = ("logs", "sources")


def open_private(db_path: Path) -> None:
    """Make the database's folder (0700) and file (0600) if missing, before SQLite opens it."""
    make_private_dirs(db_path.parent)
    create_private_file(db_path)


def secure_data_dir(data_dir: str | Path) -> int:
    """Create `data_dir` 0700, or tighten an existing one; how many paths were tightened."""
    root = Path(data_dir)
    if not root.exists():
        make_private_dirs(root)
        return 0
    if tighten(root):
        changed = 1 + tighten_tree(root)  # the root is tight now: the walk does not count it
    else:
        names = (*DB_FILES, *TOP_FOLDERS)
        changed = sum(tighten(root / name) for name in names)
    if changed:
        log.warning("tightened permissions of %d paths under %s (now 0700/0600)", changed, root)
    return changed
