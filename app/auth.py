"""Optional API key: `Authorization: Bearer KEY` or `X-API-Key: KEY`, compared in constant time."""

import hashlib
import hmac
from typing import Annotated

from fastapi import Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from app.errors import APIError

_ONLY_WITH_A_KEY = "Only when the server sets AI_DIRECTOR_API_KEY; either scheme works."
# auto_error=False: these only declare the two headers in the API document (the Authorize
# button); has_valid_key decides, because the body-limits middleware needs it before any route.
bearer = HTTPBearer(scheme_name="Bearer", description=_ONLY_WITH_A_KEY, auto_error=False)
api_key_header = APIKeyHeader(name="X-API-Key", scheme_name="ApiKey", description=_ONLY_WITH_A_KEY, auto_error=False)
# The two schemes as an operation's `security` in the API document, for routes that declare
# the key without the dependency (the body-limits middleware checks it on every POST).
KEY_SECURITY = [{bearer.scheme_name: []}, {api_key_header.scheme_name: []}]
BearerKey = Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]
HeaderKey = Annotated[str | None, Security(api_key_header)]


def _digest(value: str) -> bytes:
    # Hashing first makes the compare constant-time in the key's length as well.
    return hashlib.sha256(value.encode("utf-8")).digest()


def has_valid_key(request: Request) -> bool:
    """True when no key is configured, or the request carries the configured one."""
    settings = request.app.state.settings
    if settings.api_key is None:
        return True
    supplied = request.headers.get("x-api-key")
    auth = request.headers.get("authorization", "")
    if supplied is None and auth.lower().startswith("bearer "):
        supplied = auth[7:].strip()
    return supplied is not None and hmac.compare_digest(_digest(supplied), _digest(settings.api_key.get_secret_value()))


UNAUTHORIZED = (
    "unauthorized", "missing or wrong API key; send it as 'Authorization: Bearer <key>' or 'X-API-Key'",
    {"WWW-Authenticate": "Bearer"},
)


async def require_api_key(request: Request, _bearer: BearerKey = None, _key: HeaderKey = None) -> None:
    """401 in the one error shape unless the request may pass (see has_valid_key)."""
    if not has_valid_key(request):
        code, message, headers = UNAUTHORIZED
        raise APIError(401, code, message, headers=headers)


async def optional_api_key(_bearer: BearerKey = None, _key: HeaderKey = None) -> None:
    """Declares the key on routes that answer without it too (more detail, or by setting)."""
