"""Third-party deprecation noise never reaches a user's notebook or terminal."""

from __future__ import annotations

import subprocess
import sys


def _stderr_of(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-W", "always", "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stderr


def test_ssh_transport_imports_without_warnings() -> None:
    assert _stderr_of("import scripthut.transport.ssh") == ""


def test_cli_and_magics_import_without_warnings() -> None:
    assert _stderr_of("import scripthut.cli.main, scripthut.magics, scripthut.server.app") == ""


def test_the_filter_is_scoped_to_asyncssh() -> None:
    """The user's own code still sees cryptography's warnings."""
    code = (
        "import scripthut.transport.ssh, warnings\n"
        "from cryptography.utils import CryptographyDeprecationWarning as W\n"
        "with warnings.catch_warnings(record=True) as seen:\n"
        "    warnings.warn('mine', W)\n"
        "print(len(seen))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "1"
