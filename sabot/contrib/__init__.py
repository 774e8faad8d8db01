"""Integrations with other frameworks (``sabot.contrib.asgi``: FastAPI, Starlette)."""
