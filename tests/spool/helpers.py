"""Records and spools for the spool tests."""

from __future__ import annotations

import time
from collections.abc import Sequence

from notifier.records import Kind, Record
from notifier.spool import Lease


def rec(kind: Kind = Kind.ALARM, text: str = "", receiver: str = "http", **kw: object) -> Record:
    return Record(
        kind=kind,
        received_at=float(kw.pop("received_at", time.time())),  # type: ignore[arg-type]
        sender="192.0.2.7:5060",
        receiver=receiver,
        raw=f"raw {kind.value} {text}".encode() + b"\xff\x00",  # not UTF-8: stored losslessly
        text=text,
        device="gw01",
        code="NO_LINK",
        **kw,  # type: ignore[arg-type]
    )


def texts(leases: Sequence[Lease]) -> list[str]:
    return [lease.record.text for lease in leases]
