"""The regex node: RE2 matching, group maps, global lists, limits and errors."""
from __future__ import annotations

import time

import pytest
import re2

from app.nodes import regex
from app.nodes.base import NodeContext, NodeError
from tests.helpers import definition, post_run, run_engine, run_nodes


def call(payload: dict, seconds: float = 10.0) -> dict:
    """Load ``payload`` as the engine does and run the handler."""
    ctx = NodeContext(run_id="run_test", node_id="re", deadline=time.monotonic() + seconds)
    return regex.run(regex.Payload().load(payload), ctx)


def fails(payload: dict, code: str = "INVALID_INPUT") -> NodeError:
    with pytest.raises(NodeError) as caught:
        call(payload)
    assert caught.value.code == code, caught.value.as_dict()
    return caught.value


# -- matching ------------------------------------------------------------------


def test_regex_first_match_by_number_and_name():
    out = call({"text": "due 2024-05, paid 2024-06-30",
                "pattern": r"(?P<year>\d{4})-(\d{2})(-(\d{2}))?"})
    assert out == {"matched": True, "matches": {
        "0": "2024-05", "1": "2024", "2": "05", "3": None, "4": None, "year": "2024"}}


def test_regex_global_lists_every_match():
    out = call({"text": "a=1, b=22, c=333", "pattern": r"(\w)=(?P<n>\d+)", "global": True})
    assert out["matched"] is True
    assert out["matches"] == [
        {"0": "a=1", "1": "a", "2": "1", "n": "1"},
        {"0": "b=22", "1": "b", "2": "22", "n": "22"},
        {"0": "c=333", "1": "c", "2": "333", "n": "333"},
    ]


def test_regex_no_match():
    assert call({"text": "abc", "pattern": "x"}) == {"matched": False, "matches": {}}
    assert call({"text": "abc", "pattern": "x", "global": True}) == {
        "matched": False, "matches": []}


def test_regex_empty_text():
    assert call({"text": "", "pattern": "x"}) == {"matched": False, "matches": {}}
    assert call({"text": "", "pattern": "a*"}) == {"matched": True, "matches": {"0": ""}}


def test_regex_optional_group_that_did_not_take_part_is_null():
    out = call({"text": "b", "pattern": "(a)|(b)"})
    assert out["matches"] == {"0": "b", "1": None, "2": "b"}


def test_regex_global_empty_matches_move_on():
    # Like JavaScript's matchAll: an empty match advances one character.
    out = call({"text": "baaa", "pattern": "a*", "global": True})
    assert [m["0"] for m in out["matches"]] == ["", "aaa", ""]


def test_regex_unicode_counts_characters_not_bytes():
    out = call({"text": "héllo wörld 😀!", "pattern": r"(\p{L}+)", "global": True})
    assert [m["1"] for m in out["matches"]] == ["héllo", "wörld"]
    assert call({"text": "o😀x", "pattern": "o(.)"})["matches"]["1"] == "😀"


def test_regex_flags_inline():
    assert call({"text": "ABC", "pattern": "(?i)b"})["matches"]["0"] == "B"


def test_regex_input_is_an_alias_and_text_wins():
    assert call({"input": "abc", "pattern": "b"})["matched"] is True
    assert call({"text": "xyz", "input": "abc", "pattern": "b"})["matched"] is False


def test_regex_catastrophic_pattern_returns_at_once():
    # Exponential under Python's re (2**50 paths); linear under RE2.
    started = time.monotonic()
    out = call({"text": "a" * 50 + "b", "pattern": "(a+)+$"})
    assert out == {"matched": False, "matches": {}}
    assert time.monotonic() - started < 5


def test_regex_pattern_of_maximum_length_runs():
    assert call({"text": "a" * 1024, "pattern": "a" * 1024})["matched"] is True


def test_regex_leaves_no_pattern_in_re2s_cache():
    call({"text": "abc", "pattern": "b(c)"})
    assert re2._Regexp._make.cache_info().currsize == 0


# -- errors --------------------------------------------------------------------


@pytest.mark.parametrize("pattern, reason", [
    (r"(a)\1", "invalid escape sequence"),       # a backreference: Python's re accepts it
    (r"a(?=b)", "invalid perl operator"),         # look-ahead: Python's re accepts it
    ("[a-", "missing ]"),
    ("a{1001}", "invalid repetition size"),
])
def test_regex_pattern_that_re2_rejects_fails_the_node(pattern, reason):
    error = fails({"text": "aa", "pattern": pattern})
    assert reason in error.message and error.retryable is False


def test_regex_group_named_with_digits_is_refused():
    assert "Group name '1'" in fails({"text": "ab", "pattern": "(a)(?P<1>b)"}).message


def test_regex_unpaired_surrogate_is_invalid_input():
    assert "Unicode" in fails({"text": "a\ud800", "pattern": "a"}).message
    assert "Unicode" in fails({"text": "a", "pattern": "\ud800"}).message


def test_regex_too_many_values_fails():
    # 10 values per match × 20,001 matches is past the 100,000-value cap.
    error = fails({"text": "a" * 20_000, "pattern": "()" * 9, "global": True})
    assert "100000 values" in error.message


def test_regex_too_many_characters_fails():
    # Nine nested groups each hold the whole 500,000-character text.
    error = fails({"text": "a" * 500_000, "pattern": "(" * 8 + ".*" + ")" * 8})
    assert "characters" in error.message


def test_regex_global_search_stops_when_cancelled():
    ctx = NodeContext(run_id="run_test", node_id="re", deadline=time.monotonic() + 10)
    ctx.cancelled.set()
    data = regex.Payload().load({"text": "aaa", "pattern": "a", "global": True})
    with pytest.raises(NodeError) as caught:
        regex.run(data, ctx)
    assert caught.value.code == "TIMEOUT" and caught.value.retryable is True


@pytest.mark.parametrize("payload, field", [
    ({"text": "a"}, "pattern"),
    ({"pattern": "a"}, "text"),
    ({"text": "a", "pattern": "a" * 1025}, "pattern"),
    ({"text": 5, "pattern": "a"}, "text"),
    ({"input": None, "pattern": "a"}, "input"),
    ({"text": "a", "pattern": "a", "global": "true"}, "global"),
])
def test_regex_schema_rejects(payload, field):
    assert field in regex.Payload().validate(payload)


def test_regex_is_not_inline():
    # A global search can take seconds; it must not hold the scheduling thread.
    assert not regex.NODE.inline and regex.NODE.inline_when is None


# -- through the engine and HTTP ------------------------------------------------


def test_regex_result_feeds_later_nodes():
    out = run_nodes(
        "root>re", "re>say",
        re={"type": "regex", "payload": {"text": "{{root.result.msg}}",
                                         "pattern": r"order (?P<id>\d+)"}},
        say={"type": "log", "payload": {"message": "{{re.result.matches.id}}/"
                                                   "{{re.result.matches.1}}"}},
        payload={"msg": "your order 4711 shipped"})
    assert out["status"] == "success", out
    assert out["executionState"]["say"]["result"]["message"] == "4711/4711"


def test_regex_global_empty_matches_finish_in_the_engine():
    body = {"definition": definition("root>re", re={
        "type": "regex", "payload": {"text": "b" + "a" * 1000, "pattern": "a*",
                                     "global": True}})}
    out = run_engine(body, deadline_ms=5000)
    assert out["status"] == "success", out["error"]
    assert len(out["executionState"]["re"]["result"]["matches"]) == 3


def test_regex_resolved_pattern_too_long_is_invalid_input():
    out = run_nodes("root>re", re={"type": "regex", "payload": {
        "text": "a", "pattern": "{{root.result.p}}"}}, payload={"p": "a" * 1025})
    state = out["executionState"]["re"]
    assert state["status"] == "failure"
    assert state["error"]["code"] == "INVALID_INPUT" and "pattern" in state["error"]["message"]


def test_regex_http_overlong_pattern_is_400(client):
    body = {"definition": definition("root>re", re={
        "type": "regex", "payload": {"text": "a", "pattern": "a" * 1025}})}
    response = post_run(client, body)
    assert response.status_code == 400
    assert response.json["code"] == 400228
    assert "definition.nodes.re.payload.pattern" in response.json["errors"]


def test_regex_http_bad_pattern_fails_the_node_not_the_request(client):
    body = {"definition": definition("root>re", re={
        "type": "regex", "payload": {"text": "a", "pattern": "(a"}})}
    response = post_run(client, body)
    assert response.status_code == 200, response.json
    state = response.json["executionState"]["re"]
    assert state["status"] == "failure" and state["error"]["code"] == "INVALID_INPUT"
    assert "missing )" in state["error"]["message"]
