"""The workflow runner.

``create_app`` (``app/factory.py``) builds the Flask application. Importing the
package loads nothing else, so the ground floor — expressions, text rendering,
JSON reading, the graph, the plan — can be used without Flask.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .version import __version__

if TYPE_CHECKING:
    from flask import Flask

__all__ = ["__version__", "create_app"]


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """The application (see ``app.factory.create_app``)."""
    from .factory import create_app as build

    return build(test_config)
