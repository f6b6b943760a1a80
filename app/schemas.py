"""Request and response shapes (SPEC §1–§2, §6, §12) as marshmallow schemas, written with the
fields of ``dialect`` (which also loads them and flattens their errors).

Shapes only: graph, expression and payload rules that need the whole
definition live in ``validation``.
"""
from __future__ import annotations

from marshmallow import EXCLUDE, INCLUDE, RAISE, Schema, ValidationError, fields, validate

from .dialect import Any_, Bool, Int, Num, Obj, Str

NODE_ID = r"^[A-Za-z0-9_-]{1,64}$"
RUN_ID = r"^run_[A-Za-z0-9_]{1,64}$"
INPUT_TYPES = ("string", "number", "boolean", "object", "array")
RUN_STATUSES = ("running", "success", "failure", "cancelled")
MAX_SENSITIVE_PROP_KEYS = 1000  # SPEC §9: redaction cost grows with them


class RetrySchema(Schema):
    class Meta:
        unknown = EXCLUDE

    maxAttempts = Int(load_default=3, validate=validate.Range(1, 10))
    initialDelayMs = Int(load_default=1000, validate=validate.Range(0, 3_600_000))
    backoffRate = Num(load_default=2, validate=validate.Range(1, 100))
    maxDelayMs = Int(load_default=30_000, validate=validate.Range(0, 3_600_000))
    retryOn = fields.List(Str(), load_default=None)


class NodeSchema(Schema):
    """A node; display and B3OS-cloud keys (title, connector, …) are ignored."""

    class Meta:
        unknown = EXCLUDE

    type = Str(required=True)
    payload = Obj(load_default=dict)
    children = fields.List(Str(), load_default=list)
    branch = Str(validate=validate.OneOf(("then", "else")))
    continueOnError = Bool(load_default=False)
    timeoutMs = Int(validate=validate.Range(min=1))
    retry = fields.Nested(RetrySchema)
    loopBody = fields.List(Str())  # a for-each node's body entries (SPEC §11)


class InputSchemaItem(Schema):
    class Meta:
        unknown = EXCLUDE

    key = Str(required=True)
    type = Str(required=True, validate=validate.OneOf(INPUT_TYPES))
    required = Bool(load_default=False)
    description = Str(allow_none=True)


class VariableDefSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    name = Str(required=True)
    type = Str(allow_none=True)
    default = Any_(load_default=None)
    description = Str(allow_none=True)


def _only_root(value: list) -> None:
    if value != ["root"]:
        raise ValidationError('Must be ["root"] or absent for a synchronous run.')


class DefinitionSchema(Schema):
    """``nodes`` is checked node by node in ``validation`` so errors name the node."""

    class Meta:
        unknown = EXCLUDE

    nodes = Obj(required=True)
    inputSchema = fields.List(fields.Nested(InputSchemaItem), load_default=list)
    props = Obj(load_default=dict)
    variableDefs = fields.List(fields.Nested(VariableDefSchema), load_default=list)
    triggerNodeIds = fields.List(Str(), validate=_only_root)
    blockExpansions = Obj()
    sensitivePropKeys = fields.List(Str(), load_default=list, validate=validate.Length(
        max=MAX_SENSITIVE_PROP_KEYS,
        error="At most {max} keys are accepted."))


class RunRequestSchema(Schema):
    """The body of ``POST /v1/runs/sync``; unknown top-level keys are refused."""

    class Meta:
        unknown = RAISE

    definition = Obj(required=True)
    payload = Obj(load_default=dict)
    propValues = Obj(load_default=dict)
    runId = Str(validate=validate.Regexp(RUN_ID, error="Must match ^run_[A-Za-z0-9_]{{1,64}}$."))
    timeoutMs = Int()


class ValidateRequestSchema(RunRequestSchema):
    """The body of ``POST /v1/workflows/validate``: a ``name`` is accepted too."""

    name = Any_()


# -- responses (documentation: /openapi.json is generated from these) ----------

class NodeErrorSchema(Schema):
    code = Str(required=True)
    message = Str(required=True)
    retryable = Bool(required=True)


class RunErrorSchema(Schema):
    code = Str(required=True, validate=validate.OneOf(("NODE_FAILED", "RUN_TIMEOUT",
                                                       "RUN_TOO_LARGE", "ABORTED",
                                                       "CANCELLED", "INTERNAL")))
    message = Str(required=True)


class NodeStateSchema(Schema):
    """One node of ``executionState``; fields that do not apply are omitted."""

    type = Str(required=True)
    status = Str(required=True, validate=validate.OneOf(
        ("pending", "running", "success", "failure", "skipped")))
    level = Int(required=True)
    input = Any_()
    result = Any_()
    error = fields.Nested(NodeErrorSchema)
    reason = Str(validate=validate.OneOf(("branch_not_taken", "upstream_failed",
                                          "run_timeout", "cancelled", "no_iterations")))
    iteration = Int(metadata={"description": "a loop body instance's index (SPEC §11)"})
    loop = Str(metadata={"description": "the for-each node a body instance runs in"})
    startedAt = Str()
    finishedAt = Str()
    durationMs = Int()
    attempts = Int()
    attemptLog = fields.List(fields.Nested(lambda: AttemptSchema()), metadata={
        "description": "every attempt, when there were more than one (SPEC §14)"})


class AttemptSchema(Schema):
    """One attempt of ``attemptLog``; one still running has no end yet."""

    startedAt = Str(required=True)
    finishedAt = Str(required=True, allow_none=True)
    durationMs = Int(required=True, allow_none=True)
    error = fields.Nested(NodeErrorSchema, required=True, allow_none=True)


class RunSchema(Schema):
    """The sync response and the stored run (SPEC §1); a run in flight's state so far
    (SPEC §12: ``running``, the nodes started)."""

    class Meta:
        unknown = INCLUDE
        ordered = True

    runId = Str(required=True)
    status = Str(required=True, validate=validate.OneOf(RUN_STATUSES))
    durationMs = Int()
    totalCu = Int()
    error = fields.Nested(RunErrorSchema, allow_none=True)
    executionState = fields.Dict(keys=Str(), values=fields.Nested(NodeStateSchema))


class ErrorSchema(Schema):
    """Every error response (SPEC §6)."""

    code = Int(required=True)
    message = Str(required=True)
    requestId = Str(required=True)
    errors = fields.Dict(keys=Str(), values=fields.List(Str()),
                         metadata={"description": "problem location → messages"})
    balance = Int(metadata={"description": "402 only"})
    required = Int(metadata={"description": "402 only"})
    runId = Str(metadata={"description": "409, and a 503 of a run the hard time limit stopped"})
    status = Str(validate=validate.OneOf(RUN_STATUSES),
                 metadata={"description": "409 only: how the run ended"})


class LoopSchema(Schema):
    body = fields.List(Str(), required=True, metadata={
        "description": "the nodes the loop holds directly, in response order"})
    depth = Int(required=True, metadata={"description": "1 for a loop in no other loop"})


class ValidationResultSchema(Schema):
    valid = Bool(required=True)
    nodeCount = Int(required=True)
    levels = fields.List(fields.List(Str()), required=True, metadata={
        "description": "the nodes outside loop bodies, level by level"})
    loops = fields.Dict(keys=Str(), values=fields.Nested(LoopSchema), required=True)
    warnings = fields.Dict(keys=Str(), values=fields.List(Str()), required=True, metadata={
        "description": "payload keys that their node's type does not read (accepted and "
                       "ignored), each at its location, e.g. a misspelt key"})


class NodeTypeSchema(Schema):
    type = Str(required=True)
    payload = Obj(required=True, metadata={"description": "JSON Schema of the payload"})
    result = Obj(required=True, metadata={"description": "JSON Schema of the result"})


class NodeTypesSchema(Schema):
    nodeTypes = fields.List(fields.Nested(NodeTypeSchema), required=True)



# -- run control (SPEC §12) ---------------------------------------------------------

class RunStartedSchema(Schema):
    """``POST /v1/runs``'s 202; also a cancel's 202 (``cancelRequested``) when the run
    has not stopped within the wait."""

    runId = Str(required=True)
    status = Str(required=True, validate=validate.OneOf(("running",)))
    cancelRequested = Bool(metadata={"description": "a cancel's 202 only"})


class RunSummarySchema(Schema):
    runId = Str(required=True)
    status = Str(required=True, validate=validate.OneOf(RUN_STATUSES))
    createdAt = Str(required=True)
    durationMs = Int(required=True, allow_none=True, metadata={"description": "null while running"})
    totalCu = Int(required=True)


class RunListSchema(Schema):
    runs = fields.List(fields.Nested(RunSummarySchema), required=True,
                       metadata={"description": "newest first"})
    nextCursor = Str(required=True, allow_none=True, metadata={
        "description": "the next page's cursor; null on the last page"})


class BalanceSchema(Schema):
    balance = Int(required=True, metadata={"description": "compute units available"})
    reserved = Int(required=True, metadata={"description": "held by runs in flight"})
    used = Int(required=True, metadata={"description": "charged so far"})


# The data of each event of a stream (the run's own, or a follower's).
class RunStartedEventSchema(Schema):
    runId = Str(required=True)


class NodeStartedEventSchema(Schema):
    nodeId = Str(required=True)
    attempt = Int(required=True)
    startedAt = Str(metadata={"description": "when it started (a follower's stream: on the "
                                            "first attempt only)"})


class NodeRetryingEventSchema(Schema):
    nodeId = Str(required=True)
    attempt = Int(required=True, metadata={"description": "the attempt that failed"})
    error = fields.Nested(NodeErrorSchema, required=True)
    retryInMs = Int(required=True)


class NodeFinishedEventSchema(Schema):
    nodeId = Str(required=True)
    state = fields.Nested(NodeStateSchema, required=True,
                          metadata={"description": "its entry of executionState"})
