"""`new_record`, the parsers' fast way to build a Record, builds the very same immutable value."""

from __future__ import annotations

import dataclasses
import inspect
import pickle
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from notifier.records import Kind, Record, Severity, new_record, new_record_id, new_record_ids
from notifier.speedups import native

FIELDS: dict[str, Any] = {
    "kind": Kind.ALARM,
    "received_at": 1773144000.25,
    "sender": "192.0.2.7:514",
    "receiver": "syslog-udp",
    "raw": b"<13>raw",
    "text": "Layer 1 down",
    "device": "gw01",
    "serial": "00-90-33-01-02-03",
    "code": "0x00010002",
    "severity": Severity.MAJOR,
    "severity_raw": "2",
    "source": "PRI1",
    "details": "<x/>",
    "facility": 16,
    "device_time": 1773143999.0,
    "extras": {"procid": "7"},
    "id": "0664a1b2c3d4e5f6a7b8c9d0e1",
    "labels": {"team": "voice"},
}


def test_the_same_value_as_the_dataclass_constructor_builds() -> None:
    fast, slow = new_record(**FIELDS), Record(**FIELDS)
    assert type(fast) is Record
    assert fast == slow
    assert repr(fast) == repr(slow)
    assert fast.to_dict() == slow.to_dict()
    assert Record.from_dict(fast.to_dict(), raw=fast.raw) == fast
    assert pickle.loads(pickle.dumps(fast)) == fast
    assert fast.evolve(text="Layer 1 up") == slow.evolve(text="Layer 1 up")
    assert (fast.alarm_key, fast.time) == (slow.alarm_key, slow.time)


def test_it_is_as_immutable_as_any_record() -> None:
    r = new_record(Kind.LOG, 1.0, "192.0.2.7:514", "syslog-udp", b"x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.text = "changed"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del r.text
    assert r.text == ""


def test_defaults_are_the_dataclass_defaults_and_the_id_is_new_each_time() -> None:
    a = new_record(Kind.LOG, 1.0, "s", "r", b"x")
    b = Record(kind=Kind.LOG, received_at=1.0, sender="s", receiver="r", raw=b"x")
    assert dataclasses.replace(a, id=b.id) == b
    c = new_record(Kind.LOG, 1.0, "s", "r", b"x")
    assert a.id != c.id and a.id < c.id and len(a.id) == 26


def test_it_takes_exactly_the_fields_of_a_record() -> None:
    ours = inspect.signature(new_record).parameters
    assert list(ours) == [f.name for f in dataclasses.fields(Record)]
    for f in dataclasses.fields(Record):
        if f.name == "id":
            assert ours["id"].default is None  # None: a new id, as the dataclass makes one
        elif f.default_factory is not dataclasses.MISSING:
            assert ours[f.name].default == f.default_factory(), f.name
        else:
            default = inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default
            assert ours[f.name].default == default, f.name


_values: dict[str, st.SearchStrategy[Any]] = {
    "kind": st.sampled_from(Kind),
    "received_at": st.floats(allow_nan=False),
    "sender": st.text(max_size=5),
    "receiver": st.text(max_size=5),
    "raw": st.binary(max_size=5),
    "text": st.text(max_size=5),
    "severity": st.sampled_from(Severity),
    "facility": st.none() | st.integers(0, 23),
    "device_time": st.none() | st.floats(allow_nan=False),
    "extras": st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2),
    "id": st.text(min_size=1, max_size=26),
}


@given(st.fixed_dictionaries(_values))
def test_any_fields_give_equal_records(fields: dict[str, Any]) -> None:
    assert new_record(**fields) == Record(**fields)


def test_record_ids_carry_the_time_and_sort_in_creation_order() -> None:
    ids = [new_record_id(1773144000.5) for _ in range(3)] + [new_record_id()]
    assert all(len(i) == 26 and int(i, 16) >= 0 for i in ids)
    assert int(ids[0][:14], 16) == 1773144000_500000
    assert ids == sorted(ids) and len(set(ids)) == 4


@pytest.mark.parametrize("now", [1773144000.5, 0.0, -5.25])
def test_a_batch_of_ids_reads_like_single_ids_and_sorts_in_batch_order(now: float) -> None:
    single = new_record_id(now)
    batch = new_record_ids(300, now)
    after = new_record_id(now)
    assert all(len(i) == len(single) for i in batch)
    assert {i[:-8] for i in batch} == {single[:-8]}  # one timestamp, this process
    assert batch == sorted(batch) and single < batch[0] and batch[-1] < after
    assert len(set(batch) | {single, after}) == 302


@settings(max_examples=300, deadline=None)
@given(
    prefix=st.text(alphabet="0123456789abcdef-", max_size=20),
    values=st.lists(st.integers(min_value=0, max_value=2**70)),
)
def test_compiled_ids_are_the_python_format(prefix: str, values: list[int]) -> None:
    assert native is not None, "the compiled hot loops were not built"
    assert native.ids(prefix, values) == [f"{prefix}{v & 0xFFFFFFFF:08x}" for v in values]
