"""``hello-world``: a greeting, for trying the service out."""
from __future__ import annotations

from .base import NodeContext, PayloadSchema, Str, iso_now

INLINE = True


class Payload(PayloadSchema):
    name = Str(load_default="World")


def run(data: dict, ctx: NodeContext) -> dict:
    """``{message: "Hello, <name>!", timestamp}``."""
    return {"message": f"Hello, {data['name']}!", "timestamp": iso_now()}
