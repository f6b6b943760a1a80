"""The expression language as pure functions (SPEC §4), with property-based checks."""
from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.expressions import (
    MISSING,
    ExpressionError,
    Literal,
    Path,
    parse,
    parse_each,
    references,
    resolve,
    walk,
)
from app.jstext import number_to_text, to_text

SCOPE = {
    "root": {"result": {"message": "hello", "price": 1850.5, "n": 3, "flag": True,
                        "none": None, "items": [{"id": "a"}, {"id": "b"}],
                        "key with spaces": "spaced", "uni": "héllo ✓", "x-y": 7}},
    "$props": {"k": "v"},
}


def lookup(path: Path):
    return walk(SCOPE, path.segments)


def r(value):
    return resolve(value, lookup)


# -- parsing -------------------------------------------------------------------------

@pytest.mark.parametrize("text, segments", [
    ("{{root.result.a.b}}", ("root", "result", "a", "b")),
    ("{{ root . result . items . 0 . id }}", ("root", "result", "items", 0, "id")),
    ("{{root.result.items[1].id}}", ("root", "result", "items", 1, "id")),
    ('{{root.result["key with spaces"]}}', ("root", "result", "key with spaces")),
    ("{{$nodes.my-node.result.x-y}}", ("$nodes", "my-node", "result", "x-y")),
    ("{{7.result}}", ("7", "result")),
])
def test_paths_parse(text, segments):
    (hole,) = parse(text).holes
    assert hole.terms == (Path(segments),)


def test_fallbacks_parse_json_literals():
    (hole,) = parse('{{ a.b || c.d || 0 || "none" || true || null || -1.5e2 }}').holes
    assert hole.terms[2:] == (Literal(0), Literal("none"), Literal(True), Literal(None),
                              Literal(-150.0))


def test_a_quoted_literal_may_contain_braces_and_bars():
    (hole,) = parse('{{ a.b || "x}} || y" }}').holes
    assert hole.terms[1] == Literal("x}} || y")


@pytest.mark.parametrize("text", ["{{ }}", "{{ a. }}", "{{ a[x] }}", "{{ a || }}",
                                  "{{ a b }}", '{{ a || "open }}', "{{ a[1 }}", "{{ .a }}"])
def test_bad_holes_raise(text):
    with pytest.raises(ExpressionError):
        parse(text)


def test_field_holes_and_unclosed_braces_are_text():
    template = parse("{{@amount}} and {{ root.result.n }} and {{ never closed")
    assert [p for p in template.parts if isinstance(p, str)] == [
        "{{@amount}} and ", " and {{ never closed"]


def test_references_list_every_path_with_its_hole():
    found = references("{{a.result.x}} {{ b.result || c.result || 0 }} {{@item}}")
    assert [(source, path.head) for source, path in found] == [
        ("{{a.result.x}}", "a"), ("{{ b.result || c.result || 0 }}", "b"),
        ("{{ b.result || c.result || 0 }}", "c")]
    with pytest.raises(ExpressionError):
        references("{{ a. }}")


def test_parse_each_reads_every_hole_past_the_bad_ones():
    holes, item_holes, errors = parse_each(
        "{{ a. }} {{b.result}} {{@amount}} {{ c d }} {{ e.x || 0 }}")
    assert [h.source for h in holes] == ["{{b.result}}", "{{ e.x || 0 }}"]
    assert item_holes == ("{{@amount}}",)
    assert errors == ["{{ a. }}: expected a name after '.'", "{{ c d }}: unexpected 'd '"]
    assert parse_each("{{a.b}} text") == (list(parse("{{a.b}} text").holes), (), [])


def test_after_a_quote_that_never_closes_the_holes_are_still_read():
    holes, _, errors = parse_each('{{ a || "open }} {{b.result}} {{ "c" }}')
    assert len(errors) == 1 and errors[0].endswith("unterminated string literal")
    assert [h.source for h in holes] == ["{{b.result}}", '{{ "c" }}']
    with pytest.raises(ExpressionError):
        parse('{{ a || "open }} {{b.result}}')


def test_parse_each_is_linear_after_an_unclosed_quote():
    import time
    text = '{{"}}' + '{{\\"}}{{a.b}}' * 50_000  # each later hole would scan to the end
    started = time.perf_counter()
    holes, _, errors = parse_each(text)
    assert len(holes) == 50_000 and len(errors) == 50_001
    assert time.perf_counter() - started < 5


def test_pathological_input_parses_quickly():
    parse("{" * 200_000)
    parse("{{" + '"a' * 100_000)  # an unclosed hole is text, found in linear time


# -- resolving -------------------------------------------------------------------------

def test_whole_value_keeps_its_type():
    assert r("{{root.result.items}}") == [{"id": "a"}, {"id": "b"}]
    assert r("{{ root.result.n }}") == 3
    assert r("{{root.result.flag}}") is True
    assert r("{{root.result.none}}") is None


def test_missing_paths_give_null_or_empty_text():
    assert r("{{root.result.nope.deeper}}") is None
    assert r("a{{root.result.nope}}b") == "ab"
    assert r("{{root.result.items.9.id}}") is None
    assert r("{{root.result.message.0}}") is None  # strings are not indexed


def test_text_rules():
    assert r("{{root.result.price}}|{{root.result.n}}|{{root.result.flag}}|{{root.result.none}}"
             ) == "1850.5|3|true|"
    assert r("items={{root.result.items}}") == 'items=[{"id":"a"},{"id":"b"}]'
    assert r("{{root.result.uni}}!") == "héllo ✓!"
    assert r("x={{ root.result.x-y }}") == "x=7"


def test_fallbacks_take_the_first_value_that_is_not_null_or_missing():
    assert r("{{ root.result.none || root.result.nope || root.result.n }}") == 3
    assert r("{{ root.result.nope || 0 }}") == 0
    assert r('{{ root.result.nope || "none" }}') == "none"
    assert r("{{ root.result.nope || null }}") is None
    assert r("{{ root.result.flag || 5 }}") is True


def test_numeric_segments_index_arrays_or_name_object_keys():
    assert walk({"rows": [{"id": 1}]}, ("rows", 0, "id")) == 1
    assert walk({"rows": {"0": "zero"}}, ("rows", 0)) == "zero"
    assert walk({"rows": [1]}, ("rows", "x")) is MISSING


def test_object_keys_are_not_resolved():
    assert r({"{{root.result.n}}": "{{root.result.n}}"}) == {"{{root.result.n}}": 3}


@pytest.mark.parametrize("number, text", [
    (1850.5, "1850.5"), (3.0, "3"), (2.0, "2"), (0.1 + 0.2, "0.30000000000000004"),
    (1e21, "1e+21"), (1e16, "10000000000000000"), (1.5e-7, "1.5e-7"), (0.000001, "0.000001"),
    (-0.0, "0"), (123e-20, "1.23e-18"), (10**30, str(10**30)), (-42, "-42"),
    (1e-7, "1e-7"), (-1e-7, "-1e-7"), (1e20, "100000000000000000000"), (5e-324, "5e-324"),
    (1.7976931348623157e308, "1.7976931348623157e+308")])
def test_numbers_are_written_like_javascript(number, text):
    assert to_text(number) == text


# -- properties ------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=12)


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_number_text_round_trips(number):
    assert float(number_to_text(number)) == number or (number == 0 and math.copysign(1, number) < 0)


@given(json_values)
def test_whole_value_expressions_preserve_any_json_value(value):
    out = resolve("{{ v.x }}", lambda path: walk({"v": {"x": value}}, path.segments))
    assert out == value


@given(json_values)
def test_strings_without_holes_are_unchanged(value):
    text = json.dumps(value)
    if "{{" not in text:
        assert r(text) == text


@given(st.text())
def test_parse_never_fails_unexpectedly(text):
    try:
        template = parse(text)
    except ExpressionError:
        return
    rebuilt = "".join(p if isinstance(p, str) else p.source for p in template.parts)
    assert rebuilt == text


@given(st.lists(st.from_regex(r"[A-Za-z_][A-Za-z0-9_-]{0,8}", fullmatch=True), min_size=1,
                max_size=5))
def test_dotted_paths_round_trip(names):
    text = "{{" + ".".join(names) + "}}"
    (hole,) = parse(text).holes
    if len(names) == 1 and names[0] in ("true", "false", "null"):
        assert isinstance(hole.terms[0], Literal)
    else:
        assert hole.terms[0] == Path(tuple(names))


@given(json_values)
def test_text_of_containers_is_compact_json(value):
    if isinstance(value, (dict, list)):
        # JavaScript writes 6.6e16 as 66000000000000000: compare numbers as floats
        assert (json.loads(to_text(value), parse_int=float)
                == json.loads(json.dumps(value), parse_int=float))


def test_a_budget_stops_resolutions_that_would_blow_up():
    from app.expressions import Budget

    big = {"rows": ["x" * 1000] * 100}  # about 100 kB as JSON
    def lookup(path):
        return walk({"a": big}, path.segments)

    many_copies = {f"k{i}": "{{a}}" for i in range(100)}
    with pytest.raises(ExpressionError, match="exceed 1000000"):
        resolve(many_copies, lookup, Budget(1_000_000))
    with pytest.raises(ExpressionError):
        resolve("{{a}}" * 100, lookup, Budget(1_000_000))
    assert resolve({"k": "{{a}}"}, lookup, Budget(1_000_000))["k"] is big  # shared, not copied


# -- numeric segments, array literals, item holes (SPEC §4) ------------------------------

MONTHS = {"months": {"01": "Jan", "1": "one"}, "only_one": {"1": "one"},
          "rows": [{"id": "r0"}, {"id": "r1"}], "keyed": {"0": "zero"}}


def walked(text: str):
    (hole,) = parse(text).holes
    return walk({"root": MONTHS}, hole.terms[0].segments)


@pytest.mark.parametrize("text, segments", [
    ("{{a.01}}", ("a", "01")), ("{{a[01]}}", ("a", "01")), ("{{a.0}}", ("a", 0)),
    ("{{a[0]}}", ("a", 0)), ("{{a.10}}", ("a", 10)), ("{{a.00}}", ("a", "00")),
])
def test_only_canonical_numeric_segments_are_indexes(text, segments):
    (hole,) = parse(text).holes
    assert hole.terms == (Path(segments),)


def test_a_leading_zero_names_the_key_as_written():
    assert walked("{{root.months.01}}") == "Jan"
    assert walked("{{root.months[01]}}") == "Jan"
    assert walked("{{root.months.1}}") == "one"
    assert walked("{{root.only_one.01}}") is MISSING
    assert walked("{{root.rows.01}}") is MISSING  # not an index of an array


def test_canonical_indexes_read_arrays_and_name_keys_of_objects():
    assert walked("{{root.rows.0.id}}") == "r0"
    assert walked("{{root.rows[1].id}}") == "r1"
    assert walked("{{root.keyed.0}}") == "zero"
    assert walked("{{root.keyed[0]}}") == "zero"


def test_a_leading_zero_segment_resolves_inside_text_and_alone():
    scope = {"root": {"result": MONTHS}}

    def look(path):
        return walk(scope, path.segments)
    assert resolve("{{root.result.months.01}}", look) == "Jan"
    assert resolve("m={{root.result.only_one.01}}", look) == "m="


def test_array_literals_as_fallbacks():
    assert r("{{ root.result.nope || [] }}") == []
    assert r('{{root.result.nope || [1, "a", [2], {"k": null}]}}') == [1, "a", [2], {"k": None}]
    assert r("{{ root.result.nope || [] || 1 }}") == []
    assert r("{{ root.result.items || [] }}") == [{"id": "a"}, {"id": "b"}]
    assert r("x={{ root.result.nope || [1, 2] }}") == "x=[1,2]"
    (hole,) = parse("{{ a || [ ] }}").holes
    assert hole.terms[1] == Literal([])


def test_an_array_literal_is_a_fresh_copy_each_time():
    first = r("{{ root.result.nope || [[1]] }}")
    first[0].append(2)
    assert r("{{ root.result.nope || [[1]] }}") == [[1]]


@pytest.mark.parametrize("text", ["{{ a || [1 }}", "{{ a || [1] b }}", "{{ a || [NaN] }}",
                                  "{{ a || [Infinity] }}", "{{ a || [1,] }}",
                                  "{{ a || [1, 1e400] }}", "{{ a || [[-1e309]] }}",
                                  "{{ a || " + "[" * 40 + "]" * 40 + " }}"])
def test_bad_array_literals_raise(text):
    with pytest.raises(ExpressionError):
        parse(text)


@pytest.mark.parametrize("text", ["{{ 1e400 }}", "{{ a || -1e400 }}", "x {{ a || 2e308 }}"])
def test_a_number_no_double_holds_is_refused(text):
    # It would be Infinity: no answer, stored run or log line could write it.
    with pytest.raises(ExpressionError, match="out of range"):
        parse(text)


def test_numbers_a_double_holds_are_literals():
    assert r("{{ root.result.nope || 1.7e308 }}") == 1.7e308
    assert r("{{ root.result.nope || [-1e-400, 10000000000000000000000] }}") == [
        -0.0, 10**22]


def test_item_holes_are_kept_as_text_and_listed():
    template = parse("{{@amount}} of {{ root.result.n }} {{ @token.symbol }}")
    assert template.item_holes == ("{{@amount}}", "{{ @token.symbol }}")
    assert r("{{@amount}} of {{ root.result.n }}") == "{{@amount}} of 3"
    assert parse("{{ root.result.n }}").item_holes == ()


def test_a_long_bad_hole_gives_a_short_message():
    with pytest.raises(ExpressionError) as caught:
        parse("{{ a " + "b" * 100_000 + " }}")
    assert len(str(caught.value)) < 300
