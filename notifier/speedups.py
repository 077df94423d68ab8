"""notifier's compiled hot loops (`_speedups.c`), or None where they are not to be used.

`pip install` compiles them where there is a C compiler; each has a Python twin that runs
otherwise, and the tests hold the two to the same results. ``PURE_PYTHON=1`` in the
environment chooses the Python twins where the extension is built (to measure it, or to rule it
out); the name is zope's for the same switch, as ``NOTIFIER_*`` names are config keys.
"""

from __future__ import annotations

import os
from typing import Any


def _load() -> Any:
    if os.environ.get("PURE_PYTHON"):
        return None
    try:
        from notifier import _speedups  # type: ignore[attr-defined]
    except ImportError:  # not built: no C compiler at install time
        return None
    return _speedups


native: Any = _load()
