"""Optional API key: `Authorization: Bearer KEY` or `X-API-Key: KEY`, compared in constant time."""

import hashlib
import hmac

from fastapi import Request

from app.errors import APIError


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


async def require_api_key(request: Request) -> None:
    if not has_valid_key(request):
        code, message, headers = UNAUTHORIZED
        raise APIError(401, code, message, headers=headers)
