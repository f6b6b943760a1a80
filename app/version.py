"""The one version of the service: the package's (setup.cfg reads it here), OpenAPI's
``info.version``, the User-Agent of outbound requests, ``/livez`` and ``runner --version``."""

__version__ = "0.1.0"
