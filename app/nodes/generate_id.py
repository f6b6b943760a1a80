"""``generate-id``: a random v4 UUID, or a short id of ``length`` characters [a-z0-9]."""
from __future__ import annotations

import secrets
import string
import uuid

from marshmallow import validate

from ..dialect import Int, Str
from .base import NodeContext, NodeType, PayloadSchema, result_object

SHORTID_ALPHABET = string.ascii_lowercase + string.digits


class Payload(PayloadSchema):
    format = Str(load_default="uuid", validate=validate.OneOf(("uuid", "shortid")))
    # Checked whatever the format, so a bad length is never silently ignored.
    length = Int(load_default=8, validate=validate.Range(4, 32))


def run(data: dict, ctx: NodeContext) -> dict:
    """``{id, format}``."""
    if data["format"] == "shortid":
        new_id = "".join(secrets.choice(SHORTID_ALPHABET) for _ in range(data["length"]))
    else:
        new_id = str(uuid.uuid4())  # os.urandom underneath; canonical lowercase form
    return {"id": new_id, "format": data["format"]}


NODE = NodeType("generate-id", Payload, run, inline=True, result=result_object(
    {"id": {"type": "string"}, "format": {"type": "string", "enum": ["uuid", "shortid"]}}))
