"""send-webhook against a real HTTP server on 127.0.0.1: retries inside one attempt."""
from __future__ import annotations

import json
import socket
import time

import pytest
from marshmallow import ValidationError

from app.nodes import send_webhook
from app.nodes.base import NodeError
from tests.helpers import definition, run_engine
from tests.http_support import ALLOW, call, redirect, reply, timed_failure


def deliver(payload: dict, **kwargs) -> dict:
    return call(payload, module=send_webhook, **kwargs)


def refused(payload: dict, **kwargs) -> NodeError:
    with pytest.raises(NodeError) as caught:
        deliver(payload, **kwargs)
    return caught.value


def failing(times: int, status: int = 500):
    """A receiver that answers ``status`` ``times`` times, then 204."""
    count = {"n": 0}

    def route(handler, seen):
        count["n"] += 1
        reply(handler, status if count["n"] <= times else 204)
    return route


def test_delivered_first_time(server):
    out = deliver({"url": server.url("/hook"), "body": {"event": "x"}})
    assert out == {"deliveryId": out["deliveryId"], "status": "delivered",
                   "url": server.url("/hook"), "method": "POST", "attempts": 1,
                   "responseStatus": 200}
    seen = server.seen[0]
    assert seen.method == "POST" and json.loads(seen.body) == {"event": "x"}
    assert seen.headers["content-type"] == "application/json"
    assert seen.headers["x-webhook-delivery-id"] == out["deliveryId"]


def test_delivery_id_header_is_ours(server):
    out = deliver({"url": server.url("/hook"), "headers": {"x-webhook-delivery-id": "mine",
                                                             "X-Other": "kept"}})
    assert server.seen[0].headers["x-webhook-delivery-id"] == out["deliveryId"] != "mine"
    assert server.seen[0].headers["x-other"] == "kept"


def test_retried_until_delivered(server):
    server.routes["/hook"] = failing(2)
    out = deliver({"url": server.url("/hook"), "body": "ping"})
    assert out["attempts"] == 3 and out["responseStatus"] == 204
    assert len(server.seen) == 3
    assert {s.headers["x-webhook-delivery-id"] for s in server.seen} == {out["deliveryId"]}


def test_delivery_failed_after_max_retries(server):
    server.routes["/hook"] = failing(100, 503)
    error = refused({"url": server.url("/hook"), "maxRetries": 2})
    assert (error.code, error.retryable) == ("DELIVERY_FAILED", True)
    assert "3 POSTs" in error.message and "503" in error.message
    assert len(server.seen) == 3


def test_no_retries(server):
    server.routes["/hook"] = failing(100, 400)
    assert refused({"url": server.url("/hook"), "maxRetries": 0}).code == "DELIVERY_FAILED"
    assert len(server.seen) == 1


def test_redirect_is_not_followed(server):
    server.routes["/hook"] = redirect("/elsewhere")
    error = refused({"url": server.url("/hook"), "maxRetries": 1})
    assert "302" in error.message
    assert [s.path for s in server.seen] == ["/hook", "/hook"]


def test_connection_refused_is_retried_then_fails():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    error = refused({"url": f"http://127.0.0.1:{port}/", "maxRetries": 1})
    assert error.code == "DELIVERY_FAILED" and "NETWORK_ERROR" in error.message


def test_gives_up_when_no_time_is_left_to_wait(server):
    server.routes["/hook"] = failing(100)
    started = time.monotonic()
    error = refused({"url": server.url("/hook"), "maxRetries": 10}, seconds=0.5)
    assert error.code == "DELIVERY_FAILED"
    assert 1 <= len(server.seen) < 11
    assert time.monotonic() - started < 3


def test_huge_headers_stop_at_the_deadline_not_after(server):
    headers = {f"X-H{n}": "v" for n in range(200_000)}
    error, took = timed_failure({"url": server.url("/hook"), "headers": headers},
                                send_webhook, seconds=0.1)
    assert (error.code, error.retryable) == ("TIMEOUT", True)
    assert took < 0.1 + 0.15 and server.seen == []


def test_no_post_after_the_attempt_is_cancelled(server):
    server.routes["/hook"] = failing(100)
    error, took = timed_failure({"url": server.url("/hook"), "maxRetries": 10}, send_webhook,
                                seconds=30, cancel_after=0.3)
    assert error.code == "TIMEOUT" and took < 0.3 + 0.15
    posts = len(server.seen)
    time.sleep(0.3)
    assert len(server.seen) == posts < 11


def test_blocked_immediately_without_retries(server):
    error = refused({"url": server.url("/hook"), "maxRetries": 5}, settings={})
    assert (error.code, error.retryable) == ("BLOCKED_DESTINATION", False)
    assert server.seen == []


def test_blocked_through_the_engine_is_not_retried(server):
    body = {"definition": definition("root>w", w={
        "type": "send-webhook", "payload": {"url": server.url("/hook")},
        "retry": {"maxAttempts": 3, "initialDelayMs": 1}})}
    node = run_engine(body)["executionState"]["w"]
    assert node["error"]["code"] == "BLOCKED_DESTINATION" and node["attempts"] == 1
    assert server.seen == []


def test_through_the_engine_one_attempt_several_posts(server):
    server.routes["/hook"] = failing(1)
    body = {"definition": definition("root>w", w={
        "type": "send-webhook", "payload": {"url": server.url("/hook"), "body": {"a": 1}}})}
    out = run_engine(body, settings=ALLOW)
    node = out["executionState"]["w"]
    assert node["status"] == "success" and node["attempts"] == 1
    assert node["result"]["attempts"] == 2 and out["totalCu"] == 1


@pytest.mark.parametrize(("payload", "path", "field"), [
    ({}, "/hook\ud800", "The url"),
    ({"headers": {"X-Sig": "s\ud800"}}, "/hook", "Header 'X-Sig'"),
    ({"body": "b\ud800"}, "/hook", "The body"),
    ({"body": {"event": {"name": "\udfff"}}}, "/hook", "body['event']['name']"),
])
def test_unpaired_surrogate_is_invalid_input_before_any_post(server, payload, path, field):
    error = refused({**payload, "url": server.url(path), "maxRetries": 3})
    assert (error.code, error.retryable) == ("INVALID_INPUT", False)
    assert field in error.message and "surrogate" in error.message
    error.message.encode("utf-8")
    assert server.seen == []


def test_unpaired_surrogate_through_the_engine_is_not_retried(server):
    body = {"definition": definition("root>w", w={
        "type": "send-webhook", "payload": {"url": server.url("/hook"),
                                            "body": "{{root.result.t}}"},
        "retry": {"maxAttempts": 3, "initialDelayMs": 1}}), "payload": {"t": "x\ud800"}}
    node = run_engine(body, settings=ALLOW)["executionState"]["w"]
    assert node["error"]["code"] == "INVALID_INPUT" and node["attempts"] == 1
    assert server.seen == []


@pytest.mark.parametrize("url", ["ftp://x/", "", "http:///nohost"])
def test_invalid_url(url):
    assert refused({"url": url}).code == "INVALID_INPUT"


def test_max_retries_bounded():
    with pytest.raises(ValidationError, match="maxRetries"):
        send_webhook.Payload().load({"url": "http://x/", "maxRetries": 11})
