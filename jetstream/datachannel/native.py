"""Which per-packet path the data channel runs: the compiled one or the pure-Python one.

`FAST` is the C extension (`_fast.c`, built by the package's build when gcc, the Python
headers and libcrypto's headers are there), or None: when it was not built, or when
``JETSTREAM_DATAPATH=python`` asks for the pure-Python reference. The Python modules stay
the definition of the protocol; each of them picks the compiled twin of its inner loop from
here, once, at import. `DATAPATH` names the choice for GetServerInfo and the metrics.
"""

from __future__ import annotations

from types import ModuleType

from jetstream.config import datapath_choice

FAST: ModuleType | None
try:
    from jetstream.datachannel import _fast as FAST  # type: ignore[attr-defined,no-redef]
except ImportError:  # not built: the pure-Python path is complete on its own
    FAST = None
if datapath_choice() == "python":
    FAST = None

DATAPATH = "compiled" if FAST is not None else "python"
"""``compiled`` or ``python``: reported in GetServerInfo and ``jetstream_build_info``."""
