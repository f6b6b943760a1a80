"""The service with the test-only node types of ``tests.testnodes``, for tests that need
a misbehaving node on real gunicorn (``Server(..., app="tests.testapp:app")``)."""
from app import create_app
from app.nodes import NODE_TYPES
from tests import testnodes

NODE_TYPES.update(testnodes.TEST_TYPES)
app = create_app()
