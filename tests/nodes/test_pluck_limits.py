"""``pluck`` within SPEC §3's limits: the result cap counted as it is built, the deadline."""
from __future__ import annotations

import time

import pytest

from app.nodes import pluck
from app.nodes.base import NodeContext, NodeError
from tests.nodes.support_limits import assert_no_cpu_after, counted_items, times_out
from tests.nodes.support_pure import call

BIG = {f"k{n}": "x" * 40 for n in range(10_000)}  # about 0.5 MB of JSON


def test_many_fields_over_one_large_value_stop_at_the_result_cap():
    # 600 spellings of the item itself: 300 MB of answer if built.
    fields = [" " * n for n in range(600)]
    with pytest.raises(NodeError) as caught:
        call(pluck, {"array": [BIG], "fields": fields})
    assert caught.value.code == "OUTPUT_TOO_LARGE"
    assert caught.value.retryable is False


def test_the_count_stops_the_build_early(monkeypatch):
    built = []
    real = pluck.present

    def counted(value):
        built.append(value)
        return real(value)
    monkeypatch.setattr(pluck, "present", counted)
    with pytest.raises(NodeError):
        call(pluck, {"array": [BIG] * 100, "fields": ["", " "]})
    assert len(built) <= 17  # 16 copies of 0.5 MB pass 8 MiB; the other 184 are never read


def test_the_cap_is_the_settings_own():
    context = NodeContext(run_id="r", node_id="n", deadline=time.monotonic() + 10,
                          settings={"MAX_RESULT_CHARS": 1000})
    data = pluck.Payload().load({"array": [None] * 300, "field": "a"})
    with pytest.raises(NodeError) as caught:
        pluck.run(data, context)
    assert caught.value.code == "OUTPUT_TOO_LARGE"
    data = pluck.Payload().load({"array": [None] * 150, "field": "a"})
    assert pluck.run(data, context)["values"] == [None] * 150


def test_a_result_under_the_cap_is_whole():
    fields = [" " * n for n in range(10)]
    values = call(pluck, {"array": [BIG], "fields": fields})["values"]
    assert values == [{name: BIG for name in fields}]


@pytest.mark.parametrize("payload", [{"field": "i"}, {"fields": ["i", "x"]}])
def test_a_long_pluck_stops_at_the_deadline(payload):
    items, reads = counted_items(20_000)
    times_out(pluck, {"array": items, **payload})
    assert 0 < reads[0] < 20_000


def test_a_pluck_past_the_result_cap_stops_at_once():
    fields = [" " * n for n in range(600)]
    assert_no_cpu_after({"type": "pluck", "payload": {
        "array": ["{{root.result.big}}"], "fields": fields}},
        payload={"big": BIG}, code="OUTPUT_TOO_LARGE")
