"""Faust's older import path for the ASGI integration: the same names as ``sabot.contrib.asgi``.

Nothing here needs FastAPI; new code imports ``sabot.contrib.asgi``.
"""
from .asgi import (ASGIRequest, AsgiService, FaustLifespanMiddleware, LifespanMiddleware,
                   SabotPages, app_running, faust_app_running, faust_lifespan, lifespan, pages,
                   serve_asgi)

__all__ = ["app_running", "lifespan", "LifespanMiddleware", "pages", "SabotPages", "ASGIRequest",
           "serve_asgi", "AsgiService",
           "faust_app_running", "faust_lifespan", "FaustLifespanMiddleware"]
