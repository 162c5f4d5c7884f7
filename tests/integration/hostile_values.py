"""Hypothesis strategies for hostile input (issue 14, build 8): what a careless or hostile
caller passes where an id, a number, a time or a name belongs. Shared by the generated
suites over the client, the CLI and the dashboard."""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal
from fractions import Fraction
from typing import Any

import numpy as np
from hypothesis import strategies as st

from rayqueue import MisfirePolicy, Priority
from rayqueue.arguments import MAX_TIMEOUT_S

BIG = 10**400
UTC = dt.timezone.utc

#: Lone surrogates: valid Python str, but not UTF-8 (no journal or wire can carry them).
surrogates = st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
                     min_size=1, max_size=3)

#: Values of no sensible type for any argument.
odd_objects = st.one_of(
    st.none(), st.booleans(), st.binary(max_size=12), st.builds(object),
    st.lists(st.integers(), max_size=3), st.tuples(st.integers()),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.sets(st.integers(), max_size=2), st.complex_numbers(allow_nan=True),
    st.just(Ellipsis), st.just(int), st.just(print),
)

#: Numbers in every form Python has, most of them meaningless as counts or seconds.
numbers = st.one_of(
    st.integers(min_value=-BIG, max_value=BIG), st.integers(-5, 105),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 1e-300, 1e308, BIG, -BIG,
                     2**63, 2**64, -(2**63) - 1, MAX_TIMEOUT_S + 1]),
    st.sampled_from([Decimal("NaN"), Decimal("1e400"), Decimal("1.5"), Fraction(1, 3),
                     np.float64("nan"), np.float64(1.5), np.int64(50), np.int64(-1),
                     np.uint64(2**64 - 1), np.float32("inf")]),
    st.sampled_from(["1", "0.5", "nan", "inf", "-1", "50", "high", ""]),
    st.sampled_from(list(Priority)),
)

#: Text that ids and names are made of: ordinary, empty, control characters, lone
#: surrogates, huge, path-like, look-alike.
texts = st.one_of(
    st.text(max_size=30),
    st.text(alphabet=st.characters(codec="ascii"), min_size=1, max_size=20),
    st.builds(lambda a, s: a + s, st.text(max_size=4), surrogates),
    st.sampled_from(["", " ", "\x00", "id\x00nul", "a\nb", "tab\there", "\u200b", "😀",
                     "x" * 257, "../../etc/passwd", "a/b", "C:\\x", "%s%n",
                     "S1", "default", "manual", "name'; DROP TABLE tasks;--", "\ufeffbom",
                     "e\u0301", "\U0010ffff", "NaN", "null"]),
    st.builds(lambda: "x" * 100_000),
)

ids = st.one_of(texts, odd_objects, numbers)


def valid_seconds(value: object) -> bool:
    """Whether ``value`` is a wait the client takes (a number of seconds up to a year)."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and 0 <= value <= MAX_TIMEOUT_S)  # (NaN fails the comparison)


#: Seconds to wait: every invalid value above, and valid ones kept short (a valid wait
#: is the caller's to choose; the suite must not sleep through it).
wait_seconds = st.one_of(
    numbers.filter(lambda v: not valid_seconds(v)), odd_objects.filter(
        lambda v: v is not None), st.floats(0, 0.2), st.just(0))

#: Delays: numbers, timedeltas of every size and sign.
delays = st.one_of(
    numbers, odd_objects,
    st.timedeltas(),
    st.sampled_from([dt.timedelta.max, dt.timedelta.min, dt.timedelta(microseconds=1),
                     -dt.timedelta(seconds=1), dt.timedelta(days=10**8)]))

#: Times: naive, aware at the ends of the calendar, and not times at all.
times = st.one_of(
    st.datetimes(timezones=st.sampled_from([
        None, UTC, dt.timezone(dt.timedelta(hours=14)),
        dt.timezone(-dt.timedelta(hours=23, minutes=59))])),
    st.sampled_from([dt.datetime.min.replace(tzinfo=UTC), dt.datetime.max.replace(tzinfo=UTC),
                     dt.date(2030, 1, 1), dt.time(1, tzinfo=UTC), "2030-01-01T00:00:00Z",
                     1_900_000_000]),
    odd_objects, numbers)

#: Cron expressions: valid, never firing, malformed, not text.
crons = st.one_of(
    st.sampled_from(["* * * * *", "*/5 * * * *", "0 0 30 2 *", "0 0 31 4 *",
                     "* * * * * *", "@hourly", "60 * * * *", "0 0 * * MON#9", "- - - - -",
                     "*/0 * * * *", "1-0 * * * *", "0 0 1 1 1-7/9999999999999999999",
                     "* * * * \ud800", "\x00 * * * *", " ".join(["*"] * 5000)]),
    st.lists(st.sampled_from(["*", "0", "59", "*/7", "1-5", "L", "?", "#", ",", "99"]),
             min_size=4, max_size=6).map(" ".join),
    texts, odd_objects, numbers)

#: Time zones: real, unknown, path traversal, not text.
zones = st.one_of(
    st.sampled_from(["UTC", "Europe/Berlin", "America/St_Johns", "Mars/Olympus", "",
                     "../../../../etc/passwd", "/etc/localtime", "UTC\x00", "Europe/\ud800",
                     "Etc/GMT+14", "posixrules", "zone.tab", "."]),
    texts, odd_objects, numbers)

misfires = st.one_of(st.sampled_from(list(MisfirePolicy)),
                     st.sampled_from(["skip", "run_once", "SKIP", "bogus", ""]),
                     odd_objects, numbers)

#: JSON payload text and dicts of every shape.
deep = 3000
payload_texts = st.one_of(
    st.sampled_from(["", "not json", "[]", "null", "0", '"x"', '{"name": 5}', '{"name": "a"}',
                     '{"name": NaN}', '{"name": Infinity}', '{"name": "a", "extra": 1}',
                     '{"name": "\ud800"}', '{"name": "\\ud800"}', '{"name": "a"' + "}" * 3,
                     "\x00", '{"__proto__": {}}', '{"name": "a", "name": "b"}']),
    st.builds(lambda: "[" * deep + "]" * deep),
    st.builds(lambda: '{"name": "' + "x" * 20_000 + '"}'),
    st.text(max_size=50))
payload_dicts = st.one_of(
    st.dictionaries(st.text(max_size=5), st.one_of(st.integers(), st.text(max_size=5),
                                                 st.floats()), max_size=3),
    st.sampled_from([{"name": math.nan}, {"name": "a", 1: 2}, {"name": {1, 2}},
                     {"name": "\ud800"}, {("t",): 1},
                     {"name": b"bytes"}, {"name": BIG}])
    .map(lambda d: dict(d)),
    st.builds(lambda: {"name": "x" * 20_000}),
    st.builds(lambda n: _nested(n), st.integers(100, deep)))


def _nested(depth: int) -> dict[str, Any]:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"n": value}
    return {"name": value}


payloads = st.one_of(payload_texts, payload_dicts, odd_objects, numbers)
