"""WSGI entry point: ``gunicorn wsgi:app`` (and ``flask --app wsgi …``)."""
import sys

from app import create_app
from app.config import SettingError

try:
    app = create_app()
except SettingError as error:  # one line, no traceback (gunicorn's master says it first)
    sys.exit(f"cannot start: {error}")
