"""The ``generate-id`` node."""
from __future__ import annotations

import re
import uuid

import pytest

from app.nodes import generate_id
from tests.helpers import run_nodes
from tests.nodes.support_pure import call, failed_with, literal_rejected

CANONICAL_V4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def test_uuid_by_default():
    result = call(generate_id, {})
    assert result["format"] == "uuid"
    assert CANONICAL_V4.fullmatch(result["id"])
    assert uuid.UUID(result["id"]).version == 4


def test_uuids_differ():
    assert len({call(generate_id, {})["id"] for _ in range(50)}) == 50


def test_shortid_default_length():
    result = call(generate_id, {"format": "shortid"})
    assert result["format"] == "shortid"
    assert re.fullmatch(r"[a-z0-9]{8}", result["id"])


@pytest.mark.parametrize("length", [4, 17, 32])
def test_shortid_length(length):
    assert re.fullmatch(rf"[a-z0-9]{{{length}}}", call(generate_id, {
        "format": "shortid", "length": length})["id"])


def test_shortid_draws_from_secrets(monkeypatch):
    drawn = []

    def choice(alphabet):
        drawn.append(alphabet)
        return "q"

    monkeypatch.setattr(generate_id.secrets, "choice", choice)
    assert call(generate_id, {"format": "shortid", "length": 5})["id"] == "qqqqq"
    assert drawn == ["abcdefghijklmnopqrstuvwxyz0123456789"] * 5


def test_shortid_uses_the_whole_alphabet():
    seen = set("".join(call(generate_id, {"format": "shortid", "length": 32})["id"]
                       for _ in range(100)))
    assert seen == set("abcdefghijklmnopqrstuvwxyz0123456789")


def test_length_is_ignored_for_uuid():
    assert CANONICAL_V4.fullmatch(call(generate_id, {"length": 4})["id"])


def test_in_a_workflow():
    out = run_nodes("root>g", "g>log", g={"type": "generate-id", "payload": {"format": "shortid"}},
                    log={"type": "log", "payload": {"message": "id={{g.result.id}}"}})
    generated = out["executionState"]["g"]["result"]["id"]
    assert out["executionState"]["log"]["result"]["message"] == f"id={generated}"


# -- errors ------------------------------------------------------------------

@pytest.mark.parametrize("payload,field", [
    ({"format": "nanoid"}, "format"),
    ({"format": "UUID"}, "format"),
    ({"length": 3}, "length"),
    ({"length": 33}, "length"),
    ({"length": "8"}, "length"),
    ({"format": "shortid", "length": 8.5}, "length"),
])
def test_literal_invalid_payload_is_400228(client, payload, field):
    literal_rejected(client, {"type": "generate-id", "payload": payload}, field)


def test_length_resolving_out_of_range_is_invalid_input():
    out = run_nodes("root>g", payload={"n": 100},
                    g={"type": "generate-id", "payload": {"format": "shortid",
                                                          "length": "{{root.result.n}}"}})
    assert failed_with(out, "g").startswith("length:")
