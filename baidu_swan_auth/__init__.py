"""Exchange Baidu smart mini program login codes for ``openid`` and ``session_key``.

```python
from baidu_swan_auth import SwanAuthClient

async with SwanAuthClient(client_id, secret) as client:
    key = await client.exchange(code)
```
"""

from ._client import SwanAuthClient
from ._endpoints import DEFAULT_ENDPOINT
from ._errors import (
    ApiError,
    ClientClosedError,
    CodeConsumedError,
    ConfigurationError,
    DecryptError,
    ExchangeTimeoutError,
    InvalidClientError,
    InvalidCodeError,
    InvalidInputError,
    MissingDependencyError,
    ResponseError,
    ServiceUnavailableError,
    SwanAuthError,
    TokenRejectedError,
    TransportError,
    UsageError,
)
from ._models import AccessToken, AttemptEvent, SessionKey
from ._retry import RetryBudget
from ._token_store import MemoryTokenStore, TokenLock, TokenStore
from ._version import __version__
from .bulk import Outcome, RateLimiter
from .crypto import decrypt_user_data, swanid_signature, verify_swanid_signature

__all__ = [
    "DEFAULT_ENDPOINT",
    "AccessToken",
    "ApiError",
    "AttemptEvent",
    "ClientClosedError",
    "CodeConsumedError",
    "ConfigurationError",
    "DecryptError",
    "ExchangeTimeoutError",
    "InvalidClientError",
    "InvalidCodeError",
    "InvalidInputError",
    "MemoryTokenStore",
    "MissingDependencyError",
    "Outcome",
    "RateLimiter",
    "ResponseError",
    "RetryBudget",
    "ServiceUnavailableError",
    "SessionKey",
    "SwanAuthClient",
    "SwanAuthError",
    "TokenLock",
    "TokenRejectedError",
    "TokenStore",
    "TransportError",
    "UsageError",
    "__version__",
    "decrypt_user_data",
    "swanid_signature",
    "verify_swanid_signature",
]

# Public classes and functions defined in a private module report the package as their module, as
# httpx's do, so tracebacks and reprs show `baidu_swan_auth.InvalidCodeError`, not
# `baidu_swan_auth._errors.InvalidCodeError`. Pickle finds a class by its `__module__`, and
# `typing.get_type_hints` resolves string annotations in that module's namespace: only names this
# module exports are rewritten, and only away from a private module. Names defined in a public
# module (`Outcome` and `RateLimiter` in `bulk`, the `crypto` functions) keep it: it exports them.
for _name in __all__:
    _value = globals()[_name]
    if (isinstance(_value, type) or callable(_value)) and _value.__module__.startswith(
        f"{__name__}._"
    ):
        _value.__module__ = __name__
del _name, _value
