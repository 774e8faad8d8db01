"""HTTP errors a view raises (Faust's ``faust.web.exceptions``, same names and codes).

``raise NotFound("no such word")`` in a view answers 404 with the JSON body
``{"error": "no such word"}``; keyword arguments given to the error are added
to that body. Every error is a ``SabotError``.
"""
from __future__ import annotations

import http
from typing import Any, Dict, Optional

from ..exceptions import SabotError

__all__ = ["WebError", "ServerError", "ValidationError", "ParseError",
           "AuthenticationFailed", "NotAuthenticated", "PermissionDenied", "NotFound",
           "MethodNotAllowed", "NotAcceptable", "UnsupportedMediaType", "Throttled",
           "ServiceUnavailable"]


class WebError(SabotError):
    """An HTTP error: a status ``code`` and a human readable ``detail``."""

    code: int = http.HTTPStatus.INTERNAL_SERVER_ERROR
    detail: str = "Internal server error."
    extra_context: Dict[str, Any]

    def __init__(self, detail: Optional[str] = None, *, code: Optional[int] = None,
                 **extra_context: Any) -> None:
        if detail:
            self.detail = detail
        if code:
            self.code = code
        self.extra_context = extra_context
        super().__init__(self.detail)


class ServerError(WebError):
    """Internal Server Error (500)."""

    code = http.HTTPStatus.INTERNAL_SERVER_ERROR
    detail = "Internal server error."


class ValidationError(WebError):
    """Invalid input in POST data (400)."""

    code = http.HTTPStatus.BAD_REQUEST
    detail = "Invalid input."


class ParseError(WebError):
    """Malformed request (400)."""

    code = http.HTTPStatus.BAD_REQUEST
    detail = "Malformed request."


class AuthenticationFailed(WebError):
    """Incorrect authentication credentials (401)."""

    code = http.HTTPStatus.UNAUTHORIZED
    detail = "Incorrect authentication credentials"


class NotAuthenticated(WebError):
    """Authentication credentials were not provided (401)."""

    code = http.HTTPStatus.UNAUTHORIZED
    detail = "Authentication credentials were not provided."


class PermissionDenied(WebError):
    """No permission to perform action (403)."""

    code = http.HTTPStatus.FORBIDDEN
    detail = "You do not have permission to perform this action."


class NotFound(WebError):
    """Resource not found (404)."""

    code = http.HTTPStatus.NOT_FOUND
    detail = "Not found."


class MethodNotAllowed(WebError):
    """HTTP Method not allowed (405)."""

    code = http.HTTPStatus.METHOD_NOT_ALLOWED
    detail = "Method not allowed."


class NotAcceptable(WebError):
    """Not able to satisfy the request ``Accept`` header (406)."""

    code = http.HTTPStatus.NOT_ACCEPTABLE
    detail = "Could not satisfy the request Accept header."


class UnsupportedMediaType(WebError):
    """Request contains unsupported media type (415)."""

    code = http.HTTPStatus.UNSUPPORTED_MEDIA_TYPE
    detail = "Unsupported media type in request."


class Throttled(WebError):
    """Client is sending too many requests to server (429)."""

    code = http.HTTPStatus.TOO_MANY_REQUESTS
    detail = "Request was throttled."


class ServiceUnavailable(WebError):
    """Service is temporarily unavailable (503)."""

    code = http.HTTPStatus.SERVICE_UNAVAILABLE
    detail = "Service unavailable. Try again later."
