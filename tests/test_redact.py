"""Secrets never leave the process: response, stored run, log file (SPEC §9)."""
from __future__ import annotations

import collections
import functools
import json
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app import redact
from app.engine import Run
from app.jstext import stringify
from app.redact import REDACTED, Redactor, clip, is_secret_key
from app.ticks import CHECK_EVERY
from app.validation import Limits, check_request
from tests.fuzz_strategies import json_values
from tests.helpers import DEV_AUTH, definition, post_run, run_engine


@pytest.mark.parametrize("key", ["authorization", "Authorization", "cookie", "Set-Cookie",
                                 "password", "db_password", "secret", "clientSecret", "token",
                                 "access_token", "apiKey", "x-api-key", "API_KEY",
                                 "privateKey", "private-key", "tokens", "passwd", "passPhrase",
                                 "secrets", "credential", "google_credentials", "mnemonic",
                                 "seed_phrase", "aws_secret_access_key", "accessKey"])
def test_secret_keys(key):
    assert is_secret_key(key)


@pytest.mark.parametrize("key", ["author", "keys", "secretary", "passwordHint", "message",
                                 "apikeyId", "tokenizer", "credentialId", "seed"])
def test_ordinary_keys(key):
    assert not is_secret_key(key)


def test_values_of_secret_keys_and_sensitive_values_are_replaced_everywhere():
    redactor = Redactor(["hunter2", 4242])
    value = {"headers": {"Authorization": "Bearer abc", "Accept": "json"},
             "list": [{"password": {"nested": 1}}, "pw is hunter2!", 4242, 42, True],
             "note": "hunter2hunter2"}
    assert redactor.value(value) == {
        "headers": {"Authorization": REDACTED, "Accept": "json"},
        "list": [{"password": REDACTED}, f"pw is {REDACTED}!", REDACTED, 42, True],
        "note": REDACTED * 2}


def test_node_ids_named_like_secrets_are_not_redacted(test_nodes):
    body = {"definition": definition("root>token", token={
        "type": "t-echo-inline", "payload": {"value": {"token": "x", "ok": 1}}})}
    state = run_engine(body)["executionState"]["token"]
    assert state["result"]["value"] == {"token": REDACTED, "ok": 1}
    assert state["status"] == "success"


def test_secrets_reach_handlers_but_not_the_response_store_or_log(client, tmp_path):
    body = {"definition": {**definition("root>say", say={"type": "log", "payload": {
        "message": "pw={{$props.dbPass}} key={{root.result.apiKey}}"}}),
        "props": {"dbPass": "default-pass"}, "sensitivePropKeys": ["dbPass"]},
        "propValues": {"dbPass": "hunter2"},
        "payload": {"apiKey": "s3cr3t-key", "user": "ann"}}
    response = post_run(client, body)
    run = response.json
    state = run["executionState"]
    assert state["root"]["result"]["apiKey"] == REDACTED
    assert state["root"]["result"]["user"] == "ann"
    # the handler saw the real values; what leaves is redacted, the copy of apiKey too
    assert state["say"]["result"]["message"] == f"pw={REDACTED} key={REDACTED}"
    assert state["say"]["input"]["message"] == f"pw={REDACTED} key={REDACTED}"
    stored = client.get(f"/v1/runs/{run['runId']}", headers=DEV_AUTH).get_data(as_text=True)
    log = (tmp_path / "log" / "app.log").read_text()
    for leaving in (response.get_data(as_text=True), stored, log):
        assert "hunter2" not in leaving
        assert "s3cr3t-key" not in leaving
        assert DEV_AUTH["Authorization"].split()[1] not in leaving
    assert json.loads(stored)["executionState"]["root"]["result"]["apiKey"] == REDACTED
    assert f"pw={REDACTED}" in log


def test_error_codes_are_never_redacted_only_messages(test_nodes):
    body = {"definition": definition("root>a", a={
        "type": "t-fail", "payload": {"code": "INVALID_INPUT"}})}
    redactor = Redactor(["INPUT", "_"])  # "_": too short to be looked for
    out = Run(check_request(body, Limits()), "run_test", redactor=redactor).execute()
    assert out["error"]["code"] == "NODE_FAILED"
    assert out["error"]["message"] == f"Node 'a' failed: failed with INVALID_{REDACTED}"
    assert out["executionState"]["a"]["error"] == {
        "code": "INVALID_INPUT", "message": f"failed with INVALID_{REDACTED}",
        "retryable": False}


# What a request makes sensitive (SPEC §9)

def request(**props) -> Redactor:
    """The redactor of a request whose ``props`` are all sensitive."""
    return redactor_of({"props": props, "sensitivePropKeys": list(props)})


def redactor_of(definition_: dict, payload: dict | None = None,
                prop_values: dict | None = None) -> Redactor:
    """The redactor of a request, checked as the API checks it."""
    definition_ = {"nodes": {"root": {"type": "manual"}}, **definition_}
    return Redactor.for_request(check_request({
        "definition": definition_, "payload": payload or {}, "propValues": prop_values or {}},
        Limits()))


def test_values_of_secret_keys_anywhere_in_the_request_are_sensitive():
    definition_ = {"props": {"db": {"password": "prop-pass"}},
                   "nodes": {"root": {"type": "manual", "children": ["call"]}, "call": {
                       "type": "http-request", "payload": {
                           "url": "https://x.test/", "headers": {"X-Api-Key": "hdr-key"}}}}}
    redactor = redactor_of(definition_, {"aws": [{"aws_secret_access_key": "AKIA1"}]},
                           {"nested": {"session_token": "tok-9"}})
    text = "prop-pass hdr-key AKIA1 tok-9 keep"
    assert redactor.text(text) == f"{REDACTED} {REDACTED} {REDACTED} {REDACTED} keep"


def test_sensitive_props_take_prop_values_over_definition_props():
    definition_ = {"props": {"pin": "0000-default", "other": "visible"},
                   "sensitivePropKeys": ["pin", "absent"]}
    redactor = redactor_of(definition_, {}, {"pin": "1234-given"})
    assert redactor.text("1234-given visible") == f"{REDACTED} visible"
    assert redactor_of(definition_).text("0000-default") == REDACTED


def test_values_under_secret_keys_copied_into_other_strings_are_redacted():
    redactor = redactor_of({}, {"apiKey": "ak-live-77", "password": "pw-Secret1"})
    value = {"message": "calling with ak-live-77", "url": "https://x.test/?p=pw-Secret1"}
    assert redactor.value(value) == {"message": f"calling with {REDACTED}",
                                     "url": f"https://x.test/?p={REDACTED}"}


def test_a_numeric_prop_is_redacted_inside_text_and_as_a_number():
    redactor = request(pin=987654321)
    assert redactor.value({"m": "pin 987654321", "n": 987654321, "f": 987654321.0}) == {
        "m": f"pin {REDACTED}", "n": REDACTED, "f": REDACTED}


def test_a_numeric_string_prop_is_redacted_as_a_number_too():
    assert request(pin="987654321").value([987654321, 98765432]) == [REDACTED, 98765432]


def test_an_object_prop_is_redacted_by_leaf_by_sub_path_and_as_json():
    conf = {"db": {"user": "svc-runner", "port": 5432}, "region": "eu-west-9"}
    redactor = request(conf=conf)
    assert redactor.text("as svc-runner on 5432 in eu-west-9") == (
        f"as {REDACTED} on {REDACTED} in {REDACTED}")
    compact = functools.partial(json.dumps, separators=(",", ":"))
    for written in (stringify(conf), stringify(conf["db"]), compact(conf), compact(conf["db"])):
        assert redactor.text(f"got {written}!") == f"got {REDACTED}!", written


def test_a_secret_is_redacted_lower_cased_in_a_host_name():
    redactor = request(tenant="AcmeCorp")
    assert redactor.text("https://acmecorp.example.com/") == f"https://{REDACTED}.example.com/"


def test_a_secret_is_redacted_escaped_in_json_text_and_in_repr():
    secret = 'pä ss"wörd\\1'
    redactor = request(pw=secret)
    for written in (json.dumps(secret), json.dumps(secret, ensure_ascii=False),
                    json.dumps(json.dumps(secret)), repr(secret)):
        assert redactor.text(f"body={written};").strip("body=;\"'\\") == REDACTED, written


def test_a_secret_is_redacted_percent_encoded_in_a_url():
    secret = "a b/c?d&é"
    redactor = request(q=secret)
    path_safe = "/%:@!$&'()*+,;=~"  # as outbound URLs are written
    for written in (quote(secret, safe=""), quote_plus(secret), quote(secret, safe=path_safe)):
        assert redactor.text(f"https://x.test/?q={written}") == f"https://x.test/?q={REDACTED}"


def test_a_secret_used_as_an_object_key_is_redacted():
    assert request(user="alice-9").value({"alice-9": {"ok": 1}}) == {REDACTED: {"ok": 1}}


def test_values_shorter_than_four_characters_are_not_looked_for_in_text():
    redactor = request(short="abc", pin=123)
    assert redactor.value({"t": "abc 123", "n": 123}) == {"t": "abc 123", "n": 123}


def test_redacting_twice_leaves_redacted_as_it_is():
    redactor = request(a="dact", b="[red")
    once = redactor.value({"m": "dact and [red", "u": quote(REDACTED, safe="")})
    assert once == {"m": f"{REDACTED} and {REDACTED}", "u": "%5Bredacted%5D"}
    assert redactor.value(once) == once


def test_the_longest_secret_wins_and_matches_do_not_overlap():
    redactor = Redactor(["abcd", "abcdef", "cdefgh"])
    assert redactor.text("abcdefgh abcdxx") == f"{REDACTED}gh {REDACTED}xx"


def test_text_with_a_lone_surrogate_is_redacted():
    assert request(pw="hunter22").text("\ud800 hunter22") == f"\ud800 {REDACTED}"


# Clipping

def test_clip_redacts_before_cutting_so_no_prefix_of_a_secret_survives():
    token = redact.current.set(request(pw="hunter2-long-secret"))
    try:
        clipped = clip("login failed with hunter2-long-secret for ann", 24)
    finally:
        redact.current.reset(token)
    assert clipped == f"login failed with {REDACTED[:6]}…"
    assert "hunt" not in clipped


def test_clip_without_a_redactor_only_cuts():
    assert redact.current.get() is None
    assert clip("0123456789", 4) == "0123…"
    assert clip("0123", 4, marker="[truncated]") == "0123"


# Cost (SPEC §9: one pass over each string, however many secrets)

class CountingMatcher:
    def __init__(self, matcher):
        self.matcher, self.scans = matcher, []

    def find_matches_as_indexes(self, text):
        self.scans.append(text)
        return self.matcher.find_matches_as_indexes(text)


def test_twenty_thousand_secrets_build_one_automaton_and_scan_each_string_once(monkeypatch):
    builds = []
    real = redact.ahocorasick_rs.AhoCorasick
    monkeypatch.setattr(redact.ahocorasick_rs, "AhoCorasick",
                        lambda *args, **kw: builds.append(args) or real(*args, **kw))
    secrets = [f"secret-{i:05d}-x" for i in range(20_000)]
    redactor = Redactor(secrets)
    assert len(builds) == 1
    counting = redactor._matcher = CountingMatcher(redactor._matcher)
    strings = [f"line {i}: nothing here" for i in range(20_000)]
    strings[7] = "leak: secret-12345-x."
    out = redactor.value({"lines": strings})
    assert out["lines"][7] == f"leak: {REDACTED}."
    assert out["lines"][8] == strings[8]
    assert sorted(counting.scans) == sorted([*strings, "lines"])  # each string once, keys too


def test_a_request_without_sensitive_values_never_scans_strings(monkeypatch):
    redactor = redactor_of({"props": {"a": "x"}}, {"user": "ann"})
    monkeypatch.setattr(Redactor, "text", lambda self, text: pytest.fail("scanned"))
    assert redactor.value({"user": "ann", "token": "t", "l": ["s", {"apiKey": 1}]}) == {
        "user": "ann", "token": REDACTED, "l": ["s", {"apiKey": REDACTED}]}


def test_the_bound_on_what_is_looked_for_keeps_the_short_secrets(monkeypatch):
    monkeypatch.setattr(redact, "MAX_PATTERN_CHARS", 1000)
    redactor = Redactor(["x" * 2000, "short-one", "y" * 900])
    assert redactor.text("short-one " + "y" * 900) == f"{REDACTED} {REDACTED}"


@pytest.mark.parametrize("sensitive", [[], ["hunter22"]])
def test_value_calls_check_while_it_walks_and_stops_when_check_raises(sensitive):
    redactor = Redactor(sensitive)
    value = [{"a": [str(i)]} for i in range(3000)]
    calls = []
    redactor.value(value, check=lambda: calls.append(1))
    assert len(calls) >= 3000 * 2 // CHECK_EVERY

    def deadline():
        raise TimeoutError

    with pytest.raises(TimeoutError):
        redactor.value(value, check=deadline)


def _redacted_copy(value):
    """Secret keys only, as SPEC §9 says: every value under a secret key replaced, at any
    depth; everything else as it is."""
    if isinstance(value, dict):
        return {k: REDACTED if is_secret_key(k) else _redacted_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted_copy(v) for v in value]
    return value


SOME_KEYS = st.sampled_from(["name", "token", "x-api-key", "Authorization", "author", "items",
                             "passwordHint", "db_password", "é", ""])
KEYED_VALUES = st.recursive(json_values, lambda children: st.lists(children, max_size=3)
                            | st.dictionaries(SOME_KEYS, children, max_size=3), max_leaves=12)


@settings(max_examples=500, deadline=None)
@given(KEYED_VALUES)
def test_without_sensitive_values_only_secret_keys_are_redacted(value):
    before = json.dumps(value)
    redacted = Redactor().value(value, check=lambda: None)
    assert json.dumps(redacted) == json.dumps(_redacted_copy(value))
    assert json.dumps(value) == before  # the value itself is never changed


def test_keys_of_a_dict_with_a_secret_key_are_never_taken_for_plain():
    # Keys found plain are remembered: a dict that holds a secret key must not be
    # remembered as plain, or its secret would leave the next time.
    for _ in range(2):
        assert Redactor().value({"zz-plain": 1, "zz-token": "t"}) == {
            "zz-plain": 1, "zz-token": REDACTED}
        assert Redactor().value([{"zz-token": "t"}]) == [{"zz-token": REDACTED}]


def test_secret_keys_under_keys_known_plain_are_still_found(monkeypatch):
    monkeypatch.setattr(redact, "_plain_keys", set())
    plain = {"items": [{"name": "tea"}], "note": {"text": "x"}}
    assert Redactor().value(plain) is plain  # kept as it is: its keys are now known plain
    secret = {"items": [{"name": "tea", "apiKey": "k"}], "note": {"text": {"password": 1}}}
    assert Redactor().value(secret) == {"items": [{"name": "tea", "apiKey": REDACTED}],
                                        "note": {"text": {"password": REDACTED}}}
    redactor = redactor_of({}, {"items": [{"name": "tea", "session_token": "tok-in-items"}]})
    assert redactor.text("sent tok-in-items") == f"sent {REDACTED}"


def test_the_keys_remembered_as_plain_stay_bounded(monkeypatch):
    monkeypatch.setattr(redact, "_plain_keys", set())
    for batch in range(5):
        made_up = {f"k{batch}-{i}": i for i in range(redact.MAX_PLAIN_KEYS // 3)}
        assert Redactor().value(made_up) is made_up
        assert len(redact._plain_keys) <= redact.MAX_PLAIN_KEYS
    assert Redactor().value({"k0-1": 1, "token": 2}) == {"k0-1": 1, "token": REDACTED}


def test_secret_keys_in_dict_and_list_subclasses_are_redacted():
    value = {"a": collections.OrderedDict(token="t"), "b": UserList([{"password": "p"}])}
    assert json.dumps(Redactor().value(value)) == json.dumps(
        {"a": {"token": REDACTED}, "b": [{"password": REDACTED}]})


class UserList(list):
    """A list of a class of its own, as a handler might return."""
