"""What a receiver stores when a parser fails with anything but `ParseError`: a bug of ours.

Parsers raise only `ParseError` for bad input, and tests hold them to it. Should another
exception still escape one, the message is not the sender's fault: it is kept as it came, as a
log record with ``extras["parser_error"]``, so nothing is lost and the sender is not refused.
"""

from __future__ import annotations

from notifier.ingest.parse.syslog import host_of
from notifier.records import Kind, Record, frozen_extras, new_record

_DETAIL_CHARS = 200


def unparsed_record(
    data: bytes, error: Exception, *, received_at: float, sender: str, receiver: str
) -> Record:
    """`data` as a log record: its text as received (invalid UTF-8 replaced, `raw` keeps the
    bytes), the sender's address as the device, and the parser's failure in
    ``extras["parser_error"]``."""
    return new_record(
        Kind.LOG,
        received_at,
        sender,
        receiver,
        data,
        text=data.decode("utf-8", "replace").rstrip("\r\n\x00"),
        device=host_of(sender),
        extras=frozen_extras({"parser_error": f"{type(error).__name__}: {error}"[:_DETAIL_CHARS]}),
    )
