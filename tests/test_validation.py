"""Every rule of SPEC §1–§2 that is checked before anything runs."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.validation import Invalid, Limits, _cache_key_text, check_request
from tests.fuzz_strategies import json_values
from tests.helpers import DEV_AUTH, definition


def problems(body: dict, limits: Limits | None = None) -> tuple[int, dict]:
    with pytest.raises(Invalid) as caught:
        check_request(body, limits or Limits())
    return caught.value.code, caught.value.errors


def log(message="hi", **extra):
    return {"type": "log", "payload": {"message": message}, **extra}


def test_a_valid_definition_gives_a_plan_in_level_order():
    plan = check_request({"definition": definition("root>b", "root>a", "a>c", a=log(), b=log(),
                                                   c=log())}, Limits()).plan
    assert list(plan.nodes) == ["root", "a", "b", "c"]  # level, then position in nodes
    assert plan.levels == [["root"], ["a", "b"], ["c"]]


def test_unknown_top_level_keys_are_rejected_at_the_key():
    code, errors = problems({"definition": definition(), "surprise": 1})
    assert code == 400228 and "surprise" in errors


def test_unknown_keys_inside_definition_nodes_and_payloads_are_ignored():
    body = {"definition": {**definition("root>a", a={**log(), "title": "x", "connector": {}}),
                           "somethingNew": True}}
    body["definition"]["nodes"]["a"]["payload"]["extra"] = 1
    check_request(body, Limits())


def test_root_missing():
    code, errors = problems({"definition": {"nodes": {"a": log()}}})
    assert code == 400228 and "definition.nodes.root" in errors


def test_root_of_another_type_is_400229_and_not_also_an_unknown_type():
    code, errors = problems({"definition": {"nodes": {"root": {"type": "webhook"}}}})
    assert code == 400229
    assert errors == {"definition.nodes.root.type": [
        "The root node must be of type 'manual', not 'webhook'."]}


def test_manual_is_only_for_root():
    _, errors = problems({"definition": definition("root>a", a={"type": "manual"})})
    assert "definition.nodes.a.type" in errors


def test_children_must_exist_and_are_located_by_index():
    _, errors = problems({"definition": definition("root>a", "root>ghost", a=log())})
    assert errors == {"definition.nodes.root.children[1]": ["Unknown node 'ghost'."]}


def test_self_loop_and_cycles_are_named():
    _, errors = problems({"definition": definition("root>a", "a>a", a=log())})
    assert errors["definition.nodes.a.children[0]"] == ["Node 'a' lists itself as a child."]
    _, errors = problems({"definition": definition("root>a", "a>b", "b>c", "c>a",
                                                   a=log(), b=log(), c=log())})
    (message,) = [m for ms in errors.values() for m in ms]
    assert message.startswith("Cycle: ") and all(n in message for n in "abc")


def test_every_node_must_be_reachable_from_root():
    _, errors = problems({"definition": definition("root>a", a=log(), island=log())})
    assert errors == {"definition.nodes.island": ["Not reachable from root."]}


def test_at_most_max_nodes_counting_root():
    nodes = {f"n{i}": log() for i in range(20)}
    edges = [f"root>n{i}" for i in range(20)]
    _, errors = problems({"definition": definition(*edges, **nodes)})
    assert "21" in errors["definition.nodes"][0]
    check_request({"definition": definition(*edges[:19], **dict(list(nodes.items())[:19]))},
                  Limits())
    check_request({"definition": definition(*edges, **nodes)}, Limits(max_nodes=21))


def test_unknown_types_list_the_known_ones_and_wait_is_refused():
    _, errors = problems({"definition": definition("root>a", "root>w", a={"type": "nope"},
                                                   w={"type": "wait"})})
    assert "Known types:" in errors["definition.nodes.a.type"][0]
    assert "http-request" in errors["definition.nodes.a.type"][0]
    assert "not supported" in errors["definition.nodes.w.type"][0]


def test_branch_is_required_exactly_on_children_of_if_nodes():
    cond = {"$and": []}
    _, errors = problems({"definition": definition(
        "root>check", "check>yes", "check>no", "root>other",
        check={"type": "if", "payload": {"condition": cond}},
        yes=log(branch="then"), no=log(), other=log(branch="else"))})
    assert set(errors) == {"definition.nodes.no.branch", "definition.nodes.other.branch"}
    _, errors = problems({"definition": definition(
        "root>check", "check>yes", check={"type": "if", "payload": {"condition": cond}},
        yes=log(branch="maybe"))})
    assert set(errors) == {"definition.nodes.yes.branch"}


def test_node_field_types():
    _, errors = problems({"definition": definition("root>a", a={
        "type": "log", "payload": [], "children": "b", "continueOnError": "yes", "timeoutMs": 0,
        "retry": {"maxAttempts": 11, "backoffRate": 0.5}})})
    assert set(errors) >= {"definition.nodes.a.payload", "definition.nodes.a.children",
                           "definition.nodes.a.continueOnError", "definition.nodes.a.timeoutMs",
                           "definition.nodes.a.retry.maxAttempts",
                           "definition.nodes.a.retry.backoffRate"}


def test_node_ids_must_match_the_pattern():
    _, errors = problems({"definition": definition("root>bad id", **{"bad id": log()})})
    assert "definition.nodes.bad id" in errors


def test_literal_payload_values_are_checked_against_the_type_schema():
    _, errors = problems({"definition": definition("root>a", a={"type": "log", "payload": {}})})
    assert errors == {"definition.nodes.a.payload.message": ["Missing data for required field."]}


def test_expressions_must_parse():
    _, errors = problems({"definition": definition("root>a", a=log("{{ root. }}"))})
    assert list(errors) == ["definition.nodes.a.payload.message"]


def test_expressions_may_only_reference_ancestors():
    body = {"definition": definition(
        "root>a", "root>b", "a>c",
        a=log("{{b.result.message}}"),            # sibling
        b=log("{{c.result.message}}"),            # not related
        c=log({"deep": ["{{a.result.message}} {{ghost.result}} {{$nodes.c.result}}"]}))}
    _, errors = problems(body)
    assert "not an ancestor" in errors["definition.nodes.a.payload.message"][0]
    assert "not an ancestor" in errors["definition.nodes.b.payload.message"][0]
    deep = errors["definition.nodes.c.payload.message.deep[0]"]
    assert any("unknown node 'ghost'" in m for m in deep)
    assert any("'c' is not an ancestor of 'c'" in m for m in deep)
    assert len(deep) == 2  # a is an ancestor of c


def test_namespaces_and_declared_inputs():
    body = {"definition": {**definition("root>a", a=log(
        "{{$props.x}} {{$vars.v}} {{$run.id}} {{$workflow.id}} {{$trigger.body.q}} "
        "{{$inputs.q}} {{$inputs.undeclared}} {{$oops.x}}")),
        "inputSchema": [{"key": "q", "type": "string"}]}}
    _, errors = problems(body)
    (where,) = errors
    assert len(errors[where]) == 2
    assert "'undeclared' is not declared" in errors[where][0]
    assert "unknown namespace '$oops'" in errors[where][1]


def test_payload_must_satisfy_input_schema_with_400230():
    schema = [{"key": "price", "type": "number", "required": True},
              {"key": "tags", "type": "array"}, {"key": "on", "type": "boolean"}]
    body = {"definition": {**definition(), "inputSchema": schema},
            "payload": {"tags": "x", "on": 1}}
    code, errors = problems(body)
    assert code == 400230
    assert set(errors) == {"payload.price", "payload.tags", "payload.on"}
    body["payload"] = {"price": True}
    assert set(problems(body)[1]) == {"payload.price"}  # a boolean is not a number
    body["payload"] = {"price": 2.5, "tags": [], "on": False}
    check_request(body, Limits())


def test_payload_and_prop_values_must_be_objects():
    code, errors = problems({"definition": definition(), "payload": [], "propValues": 1})
    assert code == 400230 and set(errors) == {"payload", "propValues"}


def test_run_id_format_is_400078():
    code, errors = problems({"definition": definition(), "runId": "nope"})
    assert code == 400078 and set(errors) == {"runId"}
    for good in ("run_a", "run_" + "x" * 64):
        assert check_request({"definition": definition(), "runId": good}, Limits()).run_id == good
    assert problems({"definition": definition(), "runId": "run_" + "x" * 65})[0] == 400078


def test_timeout_ms_range():
    for bad in (0, 60_001, "5", 1.5):
        assert "timeoutMs" in problems({"definition": definition(), "timeoutMs": bad})[1]
    assert check_request({"definition": definition(), "timeoutMs": 60_000}, Limits()).timeout_ms


def test_trigger_node_ids_must_be_root_or_absent():
    body = {"definition": {**definition(), "triggerNodeIds": ["other"]}}
    assert "definition.triggerNodeIds" in problems(body)[1]
    body["definition"]["triggerNodeIds"] = ["root"]
    check_request(body, Limits())


def test_every_problem_is_listed_and_the_code_follows_precedence():
    body = {"definition": {"nodes": {"root": {"type": "log", "children": ["ghost"]}},
                           "inputSchema": [{"key": "k", "type": "string", "required": True}]},
            "runId": "bad"}
    code, errors = problems(body)
    assert code == 400229
    assert set(errors) == {"definition.nodes.root.type", "definition.nodes.root.children[0]",
                           "payload.k", "runId"}
    body["definition"]["nodes"]["root"]["type"] = "manual"
    assert problems(body)[0] == 400228
    del body["definition"]["nodes"]["root"]["children"]
    assert problems(body)[0] == 400230
    del body["definition"]["inputSchema"]
    assert problems(body)[0] == 400078


def test_definition_must_be_present_and_an_object():
    assert "definition" in problems({})[1]
    assert "definition" in problems({"definition": []})[1]
    assert "definition.nodes" in problems({"definition": {}})[1]


def test_checked_definitions_are_reused_but_each_request_is_still_checked():
    definition = {**definition_with_input(), "props": {"p": 1}}
    first = check_request({"definition": definition, "payload": {"k": "a"}, "runId": "run_1"},
                          Limits())
    second = check_request({"definition": definition, "payload": {"k": "b"}}, Limits())
    assert second.plan is first.plan  # the definition was not checked again
    assert (first.run_id, first.payload, second.run_id, second.payload) == (
        "run_1", {"k": "a"}, None, {"k": "b"})
    code, errors = problems({"definition": definition, "payload": {}})
    assert code == 400230 and set(errors) == {"payload.k"}
    assert problems({"definition": definition}, Limits(max_nodes=1))[0] == 400228


def test_a_cached_definition_still_has_its_request_checked_as_a_new_one():
    # check_request takes a valid request with a cached plan without listing problems:
    # its timeoutMs and inputs must be judged as on the whole way (the first request).
    limits = Limits(run_deadline_ms=5000)
    fresh = {**definition_with_input(), "props": {"fresh": 1}}
    refused = [{"payload": {"k": "a"}, "timeoutMs": timeout} for timeout in (0, 5001)]
    refused += [{"payload": {"k": 1}}, {"payload": {"k": "a"}, "timeoutMs": 0, "runId": "x"}]
    first = [problems({"definition": fresh, **body}, limits) for body in refused]
    check_request({"definition": fresh, "payload": {"k": "a"}}, limits)  # now cached
    assert [problems({"definition": fresh, **body}, limits) for body in refused] == first
    assert first[0] == (400228, {"timeoutMs": ["Must be between 1 and 5000."]})
    for timeout in (1, 5000):
        assert check_request({"definition": fresh, "payload": {"k": "a"}, "timeoutMs": timeout},
                             limits).timeout_ms == timeout


def definition_with_input():
    return {**definition("root>a", a=log()),
            "inputSchema": [{"key": "k", "type": "string", "required": True}]}


def test_ill_formed_input_schema_items_are_reported_not_crashed_on():
    body = {"definition": {**definition("root>a", a=log("{{$inputs.k}}")),
                           "inputSchema": [{"key": "k"}, {"type": "string"}, 5]},
            "payload": {"k": 1}}
    code, errors = problems(body)
    assert code == 400228
    assert {"definition.inputSchema[0].type", "definition.inputSchema[1].key",
            "definition.inputSchema[2]"} <= set(errors)


# -- what follows a node id (SPEC §4) -------------------------------------------------------

FETCH = {"type": "http-request", "payload": {"url": "https://api.example/orders"}}


def say_errors(message, **nodes) -> list[str]:
    """The problems of ``say``'s message, ``say`` reading root → fetch → greet → each."""
    body = {"definition": definition(
        "root>fetch", "fetch>greet", "greet>each", "each>say", fetch=FETCH,
        greet={"type": "hello-world"},
        each={"type": "for-each", "payload": {"array": [1]}, "loopBody": ["inner"]},
        inner=log("{{$item}}"), say=log(message), **nodes)}
    try:
        check_request(body, Limits())
    except Invalid as caught:
        assert set(caught.errors) == {"definition.nodes.say.payload.message"}, caught.errors
        return caught.errors["definition.nodes.say.payload.message"]
    return []


def test_after_a_node_id_comes_a_section_of_its_view():
    assert say_errors("{{fetch.json.orders}}") == [
        "{{fetch.json.orders}}: 'json' is not a part of node 'fetch': after a node id comes "
        "result, input, payload, status or error. Did you mean {{fetch.result.json.orders}}?"]
    [message] = say_errors("{{ $nodes.fetch.reslt.status }}")
    assert message.endswith("Did you mean 'result'?")
    [message] = say_errors("{{fetch.0}}")
    assert "'0' is not a part of node 'fetch'" in message
    [message] = say_errors("{{root.price}}")  # the root's result is open: any key may be
    assert message.endswith("Did you mean {{root.result.price}}?")


def test_every_section_of_a_node_and_the_whole_node_can_be_read():
    assert say_errors("{{fetch}} {{fetch.result}} {{fetch.input}} {{fetch.payload}} "
                      "{{fetch.status}} {{fetch.error}} {{$nodes.fetch.error.message}} "
                      "{{fetch.error.code}} {{fetch.input.url}} {{fetch.payload.url}}") == []


def test_a_field_a_fixed_result_cannot_hold_is_refused_with_the_name_meant():
    assert say_errors("{{greet.result.mesage}}") == [
        "{{greet.result.mesage}}: 'result' of node 'greet' (hello-world) has no field "
        "'mesage'. Did you mean 'message'?"]
    [message] = say_errors("{{greet.result.zzz}}")
    assert message.endswith("has no field 'zzz'. Its fields: message, timestamp.")
    [message] = say_errors("{{greet.result.message.length}}")
    assert message.endswith("'result.message' of node 'greet' (hello-world) is a string: "
                            "nothing is inside it ('length').")
    [message] = say_errors("{{each.result.iterations.first}}")
    assert "is an array: only an index (0, 1, …) can follow it, not 'first'." in message
    [message] = say_errors("{{each.result.iterations.0.stauts}}")
    assert "'result.iterations.0' of node 'each' (for-each) has no field 'stauts'. " \
           "Did you mean 'status'?" in message
    [message] = say_errors("{{fetch.status.code}}")
    assert "'status' of node 'fetch' (http-request) is a string" in message
    [message] = say_errors("{{fetch.error.cod || fetch.result.status}}")
    assert message.endswith("has no field 'cod'. Did you mean 'code'?")
    [message] = say_errors("{{fetch.result.statusText.x}}")
    assert "is a string" in message


def test_free_form_parts_of_results_are_not_looked_into():
    assert say_errors(
        "{{fetch.result.json.orders.0.id}} {{fetch.result.headers.etag}} "
        "{{fetch.result.body}} {{fetch.result.contentType}} {{fetch.input.query.q.deep}} "
        "{{root.result.anything.at.all}} {{root.result.triggeredAt}} "
        "{{each.result.iterations.0.results.inner.message.x}} {{each.result.iterations.3}}"
    ) == []
    free = {"js": {"type": "code-transform", "payload": {"code": "x"}},
            "rx": {"type": "regex", "payload": {"text": "a", "pattern": "a"}},
            "low": {"type": "list-min", "payload": {"array": [1]}}}
    body = {"definition": definition("root>js", "js>rx", "rx>low", "low>say", **free, say=log(
        "{{js.result.output.a.b}} {{rx.result.matches.0}} {{rx.result.matches.name}} "
        "{{low.result.item.price}} {{low.result.min}}"))}
    check_request(body, Limits())


def test_the_root_payload_is_the_one_written_in_the_definition():
    # SPEC §4: {{node.payload}} is the node's payload as written, for the root too (its
    # result is the request's payload): a key it does not hold can never be read.
    assert say_errors("{{root.payload.x}}") == [
        "{{root.payload.x}}: 'payload' of node 'root' (manual), as written in the "
        "definition, has no field 'x'. The request's payload is read as {{root.result.x}} "
        "or {{$trigger.body.x}}."]
    assert say_errors("{{root.payload.x}}", root={"type": "manual", "payload": {"x": 1}}) == []
    [message] = say_errors("{{fetch.payload.ur}}")
    assert message.endswith("has no field 'ur'. Did you mean 'url'?")
    [message] = say_errors("{{fetch.payload.url.x}}")
    assert "is a string: nothing is inside it ('x')" in message


def test_paths_inside_loop_bodies_are_checked_like_any_other():
    body = {"definition": definition(
        "root>each", "a>b", each={"type": "for-each", "payload": {"array": [1]},
                                  "loopBody": ["a"]},
        a={"type": "hello-world", "payload": {"name": "{{$item.name}} {{$index}}"}},
        b=log("{{a.result.message}} {{$for.each.item.x}} {{a.result.mesage}}"))}
    _, errors = problems(body)
    assert errors == {"definition.nodes.b.payload.message": [
        "{{a.result.mesage}}: 'result' of node 'a' (hello-world) has no field 'mesage'. "
        "Did you mean 'message'?"]}


def test_every_problem_of_a_string_is_reported_even_when_a_hole_does_not_parse():
    assert say_errors("{{ root.result. }} {{ghost.result}} {{fetch.json}} {{ a b }}") == [
        "{{ root.result. }}: expected a name after '.'",
        "{{ a b }}: unexpected 'b '",
        "{{ghost.result}}: unknown node 'ghost'.",
        "{{fetch.json}}: 'json' is not a part of node 'fetch': after a node id comes "
        "result, input, payload, status or error. Did you mean {{fetch.result.json}}?"]
    # A quote that never closes: the holes after it are still read.
    messages = say_errors('{{ root.result.x || "open }} {{ghost.result}}')
    assert messages[0].endswith("unterminated string literal")
    assert messages[1:] == ["{{ghost.result}}: unknown node 'ghost'."]


# -- misspellings: payload keys, child ids ------------------------------------------------

def test_a_missing_required_key_names_the_unknown_key_that_looks_like_it():
    _, errors = problems({"definition": definition("root>f", f={
        "type": "http-request", "payload": {"uri": "https://api.example", "headers": {}}})})
    assert errors == {"definition.nodes.f.payload.url": [
        "Missing data for required field. The payload has 'uri', which http-request does "
        "not know and ignores: a misspelling of 'url'?"]}
    _, errors = problems({"definition": definition("root>w", w={
        "type": "delay", "payload": {"DelayMS": 5, "note": "x"}})})
    assert errors["definition.nodes.w.payload.delayMs"][0].endswith(
        "The payload has 'DelayMS', which delay does not know and ignores: a misspelling "
        "of 'delayMs'?")
    _, errors = problems({"definition": definition("root>w", w={
        "type": "delay", "payload": {"note": "x"}})})  # nothing like it: nothing named
    assert errors == {"definition.nodes.w.payload.delayMs": ["Missing data for required field."]}


def test_an_unknown_child_id_names_the_node_it_may_misspell():
    _, errors = problems({"definition": definition("root>fetc", "fetch>parse", fetch=FETCH,
                                                   parse=log("{{fetch.result.status}}"))})
    assert errors == {"definition.nodes.root.children[0]": [
        "Unknown node 'fetc'. Did you mean 'fetch'?"]}


def test_nodes_cut_off_only_by_an_unknown_child_id_are_not_also_unreachable():
    # Without the rule: fetch, parse and tell are each "Not reachable from root", and
    # fetch's {{root.result.url}} "not an ancestor": four errors burying the one typo.
    fetch = {"type": "http-request", "payload": {"url": "{{root.result.url}}"}}
    body = {"definition": definition("root>fetc", "fetch>parse", "parse>tell", fetch=fetch,
                                     parse=log("{{fetch.result.json}}"), tell=log())}
    _, errors = problems(body)
    assert list(errors) == ["definition.nodes.root.children[0]"]
    # The only node left that nobody lists is taken as the one meant, whatever its name.
    body["definition"]["nodes"]["root"]["children"] = ["orders"]
    assert list(problems(body)[1]) == ["definition.nodes.root.children[0]"]
    # A node forgotten beside the misspelling is still reported …
    body["definition"]["nodes"]["root"]["children"] = ["fetc"]
    body["definition"]["nodes"]["island"] = log()
    assert list(problems(body)[1]) == ["definition.nodes.root.children[0]",
                                       "definition.nodes.island"]
    # … and an unknown id listed by a node that root does not reach rescues nothing.
    _, errors = problems({"definition": definition("island>ghost", island=log())})
    assert list(errors) == ["definition.nodes.island.children[0]", "definition.nodes.island"]


def test_a_misspelt_loop_body_entry_is_one_error():
    _, errors = problems({"definition": definition(
        "root>each", "check>ship",
        each={"type": "for-each", "payload": {"array": [1]}, "loopBody": ["chek"]},
        check=log("{{$item}}"), ship=log("{{check.result.message}}"))})
    assert errors == {"definition.nodes.each.loopBody[0]": [
        "Unknown node 'chek'. Did you mean 'check'?"]}


# -- item holes, sensitivePropKeys, the problem cap, hostile sizes -----------------------

def test_item_holes_are_rejected_outside_format_and_filter():
    _, errors = problems({"definition": definition(
        "root>a", "root>c", a=log("total {{@amount}}"),
        c={"type": "if", "payload": {"condition": {"{{@amount}}": {"$gt": 1}}},
           "children": []})})
    [message] = errors["definition.nodes.a.payload.message"]
    assert message.startswith("{{@amount}}: an item field")
    assert "definition.nodes.c.payload.condition.{{@amount}}" in errors


def test_item_holes_are_allowed_in_format_template_and_filter_condition():
    request = check_request({"definition": definition(
        "root>f", "root>g",
        f={"type": "format", "payload": {"data": [], "template": "{{@name}}: {{ @n }}"}},
        g={"type": "filter", "payload": {"array": [], "filter": {
            "{{@amount}}": {"$gt": 1}, "$or": [{"x": {"$eq": "{{@other}}"}}]}}})}, Limits())
    assert request.plan.nodes["f"].payload["template"] == "{{@name}}: {{ @n }}"


def test_item_holes_elsewhere_in_format_are_rejected():
    _, errors = problems({"definition": definition("root>f", f={"type": "format", "payload": {
        "data": [], "template": "{{@a}}", "separator": "{{@sep}}"}})})
    assert list(errors) == ["definition.nodes.f.payload.separator"]


def test_at_most_1000_sensitive_prop_keys():
    keys = [f"k{i}" for i in range(1001)]
    code, errors = problems({"definition": {**definition(), "sensitivePropKeys": keys}})
    assert code == 400228
    assert errors == {"definition.sensitivePropKeys": ["At most 1000 keys are accepted."]}
    check_request({"definition": {**definition(), "sensitivePropKeys": keys[:1000]}}, Limits())


def bad_nodes(count: int, pad: int = 0) -> dict:
    """A definition of ``count`` nodes, each with an unknown type and an unknown child."""
    nodes = {"root": {"type": "manual", "children": [f"n{i}" for i in range(count)]}}
    for i in range(count):
        nodes[f"n{i}"] = {"type": "nope" + "x" * pad, "children": [f"ghost{i}"]}
    return {"nodes": nodes}


def test_problems_are_capped_with_a_note_that_more_were_left_out():
    _, errors = problems({"definition": bad_nodes(10)}, Limits(max_problems=5))
    assert sum(len(m) for k, m in errors.items() if k != "_truncated") == 5
    assert errors["_truncated"] == ["More problems were found; only the first 5 are listed."]
    _, errors = problems({"definition": bad_nodes(1)}, Limits(max_problems=5))
    assert "_truncated" not in errors


def test_the_code_counts_problems_left_out():
    body = {"definition": {"nodes": {"a": {"type": "nope"}, "root": {"type": "webhook"}}}}
    code, errors = problems(body, Limits(max_problems=1))
    assert code == 400229 and "definition.nodes.a.type" in errors and "_truncated" in errors


# The tests of linear work below bound this process's CPU time, not the wall clock: a
# quadratic step would take minutes here, and other work on a shared machine does not
# count against them.


def test_a_large_bad_definition_answers_a_small_body_quickly():
    import json
    import time
    body = {"definition": bad_nodes(6000, pad=100)}
    assert len(json.dumps(body)) > 900_000
    started = time.process_time()
    _, errors = problems(body)
    assert time.process_time() - started < 5
    assert sum(len(m) for k, m in errors.items() if k != "_truncated") == 1000
    assert len(json.dumps(errors)) < 200_000


def test_hostile_keys_and_values_give_short_locations_and_messages():
    import json
    long_id = "n" * 300_000
    nodes = {"root": {"type": "manual", "children": [long_id, "x" * 300_000]},
             long_id: {"type": "log", "payload": {"message": "hi"}}}
    _, errors = problems({"definition": {"nodes": nodes}})
    assert len(json.dumps(errors)) < 5_000


def test_validation_is_linear_on_hostile_payloads():
    import time
    # Each was quadratic: paths built for every value under a long key, a list scan
    # for children listed twice.
    holes = "{{root.result.a}}" * 60_000  # 1 MiB of expressions in one string
    huge_key = {"k" * 400_000: ["{{@item}}", "{{ nope.result }}"] * 20_000}
    many_children = {f"n{i}": log() for i in range(40_000)}
    started = time.process_time()
    check_request({"definition": definition("root>a", a=log(holes))}, Limits())
    _, errors = problems({"definition": definition("root>a", a={
        "type": "log", "payload": {"message": "hi", **huge_key}})})
    assert len(errors) <= 1001
    _, errors = problems({"definition": definition(
        *[f"root>{n}" for n in many_children], **many_children)})
    assert "definition.nodes" in errors
    assert time.process_time() - started < 5


def test_validation_is_linear_on_misread_paths_and_unclosed_quotes():
    import time
    # Paths into a large payload as written and into a fixed result, each one different
    # (no cache helps), and quotes that never close, each before a hole.
    started = time.process_time()
    wide = {"type": "log", "payload": {"message": "x", **{f"k{i}": i for i in range(30_000)}}}
    misread = "".join(f"{{{{a.payload.q{i}}}}}{{{{h.result.mesage{i}}}}}"
                      for i in range(15_000))
    _, errors = problems({"definition": definition("root>a", "a>h", "h>b", a=wide, h={
        "type": "hello-world"}, b=log(misread))})
    assert sum(map(len, errors.values())) == 1001
    unclosed = '{{"}}' + '{{\\"}}{{root.result.a}}' * 40_000
    _, errors = problems({"definition": definition("root>a", a=log(unclosed))})
    assert "_truncated" in errors
    # Thousands of unknown child ids, each close to many long node ids: a "did you
    # mean" costs milliseconds here, so only so many are looked for.
    nodes = {f"n{i:03d}" * 16: log() for i in range(99)}
    ghosts = [f"n{i:04d}" * 12 for i in range(3000)]
    _, errors = problems({"definition": definition(*[f"root>{g}" for g in ghosts], **nodes)},
                         Limits(max_nodes=100))
    assert len(errors) == 1001
    assert time.process_time() - started < 5


def test_the_known_types_are_listed_once():
    _, errors = problems({"definition": bad_nodes(3)})
    listed = [m for k, ms in errors.items() if k.endswith(".type") for m in ms]
    assert len(listed) == 3 and sum("Known types" in m for m in listed) == 1


# -- the plan cache's key ------------------------------------------------------------

# Values that one key could mix up: equal in Python, or written alike by one encoder.
LOOKALIKES = st.sampled_from([
    1, 1.0, True, 0, 0.0, -0.0, False, None, "1", "true", 2 ** 64 - 1, 2 ** 64, 2 ** 70,
    -(2 ** 63) - 1, float(2 ** 64), 1e16, 1e-05, "\ud800", "\udfff", "é", "\\u00e9", "\x7f",
    "\u2028", "null", ""])
LOOKALIKE_VALUES = st.recursive(LOOKALIKES, lambda children: st.lists(children, max_size=2)
                                | st.dictionaries(st.sampled_from(["a", "é", "\ud800"]),
                                                  children, max_size=2), max_leaves=4)


@settings(max_examples=500, deadline=None)
@given(LOOKALIKE_VALUES, LOOKALIKE_VALUES)
def test_the_plan_cache_key_tells_definitions_apart_as_their_json_does(one, other):
    def json_text(value):
        return json.dumps(value, separators=(",", ":"))
    same_key = _cache_key_text({"nodes": one}) == _cache_key_text({"nodes": other})
    assert same_key == (json_text(one) == json_text(other))


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_the_plan_cache_key_is_one_per_value(value):
    assert _cache_key_text({"v": value}) == _cache_key_text(json.loads(json.dumps({"v": value})))


def test_definitions_alike_but_for_a_value_each_run_their_own(client):
    """The plan cache never hands one definition's plan to another that differs only by
    a number's type, a number beyond 64 bits or a lone surrogate."""
    texts = ["1", "1.0", "true", "18446744073709551616", "18446744073709551617",
             '"\\ud800"', '"\\udfff"', '"\\u00e9"', "1e-05", "0.00001"]
    for _ in range(2):  # the second time, from the cache
        for text in texts:
            body = json.dumps({"definition": definition("root>a", a={
                "type": "log", "payload": {"message": "m", "n": "N"}})}).replace('"N"', text)
            answer = client.post("/v1/runs/sync", data=body, headers={
                **DEV_AUTH, "Content-Type": "application/json"})
            assert answer.status_code == 200
            node_input = answer.get_data(as_text=True).split('"input":')[1]
            assert node_input.startswith('{"message":"m","n":' + json.dumps(json.loads(text)))
