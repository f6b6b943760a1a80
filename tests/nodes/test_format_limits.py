"""``format`` within SPEC §3's limits: text counted before it is built, the deadline, and
the JSON text of values (``jstext.stringify``) written fast and interruptibly."""
from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app import jstext
from app.nodes import format_
from app.nodes.base import MAX_TEXT_CHARS, NodeError
from tests.nodes.support_limits import assert_no_cpu_after, counted_items, counting_ctx, times_out
from tests.nodes.support_pure import call

BIG = {f"k{n}": "x" * 40 for n in range(10_000)}  # about 0.5 MB of JSON


def test_a_template_repeating_a_large_value_stops_at_the_text_cap(monkeypatch):
    written = []
    real = format_.to_text

    def counted(value, check=None):
        written.append(1)
        return real(value, check)
    monkeypatch.setattr(format_, "to_text", counted)
    with pytest.raises(NodeError) as caught:
        call(format_, {"data": BIG, "template": "{{@}}" * 600})
    assert caught.value.code == "INVALID_INPUT"
    assert str(MAX_TEXT_CHARS) in caught.value.message
    assert len(written) <= 9  # 9 copies pass 4 MiB: the other 591 are never written


def test_separators_count_too():
    separator = "x" * (MAX_TEXT_CHARS // 2 + 1)
    with pytest.raises(NodeError) as caught:
        call(format_, {"data": [1, 2, 3], "template": "", "separator": separator})
    assert caught.value.code == "INVALID_INPUT"
    text = call(format_, {"data": [1, 2], "template": "", "separator": separator})["formatted"]
    assert text == separator


def test_a_long_format_stops_at_the_deadline():
    items, reads = counted_items(20_000)
    times_out(format_, {"data": items, "template": "{{@i}};", "separator": ""})
    assert 0 < reads[0] < 20_000


def test_a_template_of_many_holes_stops_at_the_deadline():
    items, reads = counted_items(1)
    times_out(format_, {"data": items, "template": "{{@i}}" * 5_000, "separator": ""})
    assert 0 < reads[0] < 5_000


def test_writing_one_large_value_stops_at_the_deadline():
    times_out(format_, {"data": {"v": [1e-7] * 20_000}, "template": "{{@v}}",
                        "separator": ""}, allowed=1)


def test_a_format_cut_by_its_time_limit_stops_burning_cpu():
    rows = [[1e-7] * 1000 for _ in range(500)]  # 2.5 MB of text, a float at a time
    assert_no_cpu_after({"type": "format", "payload": {
        "data": "{{root.result.rows}}", "template": "{{@}}"}}, payload={"rows": rows})


# -- jstext.stringify ------------------------------------------------------------------

def _reference(value) -> str:
    """JSON.stringify, one value at a time (the former implementation)."""
    if isinstance(value, dict):
        return "{" + ",".join(json.dumps(k, ensure_ascii=False) + ":" + _reference(v)
                              for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_reference(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return jstext.number_to_text(value)
    return str(value)


SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**30, 10**30), st.floats(),
                    st.sampled_from([0.0, -0.0, 2.0, 1e16, 1e21, 1e-7, 1.5e-7, 123e-20,
                                     -1e300, 5e-324, "1.5", "x\"1e5\\", "é\n"]),
                    st.text())
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner), st.dictionaries(st.text(), inner)), max_leaves=40)


@settings(max_examples=200, deadline=None)
@given(VALUES)
def test_stringify_writes_what_json_stringify_writes(value):
    assert jstext.stringify(value) == _reference(value)


def test_stringify_past_a_thousand_tokens():
    value = [[n, n / 7, float(n), "a.5", -n * 1e-9, {"k": 1e22, "n": None}]
             for n in range(3_000)]
    assert jstext.stringify(value) == _reference(value)
    assert jstext.stringify([math.inf, -math.inf]) == _reference([math.inf, -math.inf])


@pytest.mark.parametrize("value", [
    [0.5] * 100,  # checked every few floats
    ["1.5"] * 40_000 + [2.0],  # and every few thousand other tokens
])
def test_stringify_checks_the_deadline_as_it_rewrites_floats(value):
    context = counting_ctx(allowed=2)
    with pytest.raises(NodeError):
        jstext.stringify(value, context.check)
    assert context.checks == 3
