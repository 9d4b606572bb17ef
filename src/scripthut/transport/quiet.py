"""Keep third-party deprecation noise out of users' notebooks and terminals.

asyncssh still names `cryptography`'s DSA classes at import time, and newer releases of
cryptography warn (`CryptographyDeprecationWarning`) each time they are named. The warning
is for asyncssh's maintainers, not for a ScriptHut user, yet it lands on stderr of every
kernel and server that loads an SSH backend (and fails nbval on the unexpected stderr).
The filter is scoped to warnings raised from asyncssh's own modules, so ScriptHut's and
the user's code still see every warning of that kind.
"""

from __future__ import annotations

import warnings

ASYNCSSH_MODULES = r"asyncssh(\.|$)"


def quiet_asyncssh_warnings() -> None:
    """Ignore cryptography's deprecation warnings attributed to asyncssh (idempotent)."""
    try:
        from cryptography.utils import CryptographyDeprecationWarning
    except ImportError:  # cryptography without the class: nothing to quiet
        return
    warnings.filterwarnings(
        "ignore", category=CryptographyDeprecationWarning, module=ASYNCSSH_MODULES
    )
