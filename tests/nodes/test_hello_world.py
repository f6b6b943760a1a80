"""The ``hello-world`` node."""
from __future__ import annotations

import re

from app.nodes import hello_world
from tests.helpers import run_nodes
from tests.nodes.support_pure import call, failed_with, literal_rejected

ISO_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def test_default_name():
    result = call(hello_world, {})
    assert result["message"] == "Hello, World!"
    assert ISO_MS.fullmatch(result["timestamp"])


def test_given_name_unicode_and_empty():
    assert call(hello_world, {"name": "Ada"})["message"] == "Hello, Ada!"
    assert call(hello_world, {"name": "世界 🌍"})["message"] == "Hello, 世界 🌍!"
    assert call(hello_world, {"name": ""})["message"] == "Hello, !"


def test_in_a_workflow():
    out = run_nodes("root>h", payload={"who": "Grace"},
                    h={"type": "hello-world", "payload": {"name": "{{root.result.who}}"}})
    assert out["executionState"]["h"]["result"]["message"] == "Hello, Grace!"


def test_literal_name_of_wrong_type_is_400228(client):
    assert literal_rejected(client, {"type": "hello-world", "payload": {"name": 5}},
                            "name") == ["Not a valid string."]


def test_name_resolving_to_an_object_is_invalid_input():
    out = run_nodes("root>h", payload={"who": {"first": "Ada"}},
                    h={"type": "hello-world", "payload": {"name": "{{root.result.who}}"}})
    assert failed_with(out, "h") == "name: Not a valid string."


def test_name_resolving_to_nothing_is_invalid_input():
    out = run_nodes("root>h", payload={},
                    h={"type": "hello-world", "payload": {"name": "{{root.result.who}}"}})
    assert failed_with(out, "h").startswith("name:")
