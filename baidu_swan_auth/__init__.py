"""Exchange Baidu smart mini program login codes for ``openid`` and ``session_key``.

```python
from baidu_swan_auth import SwanAuthClient

async with SwanAuthClient(client_id, secret) as client:
    key = await client.exchange(code)
```
"""

from ._client import DEFAULT_ENDPOINT, SwanAuthClient
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
    TransportError,
    UsageError,
)
from ._models import AttemptEvent, SessionKey
from ._retry import RetryBudget
from ._version import __version__
from .bulk import Outcome
from .crypto import decrypt_user_data, swanid_signature, verify_swanid_signature

__all__ = [
    "DEFAULT_ENDPOINT",
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
    "MissingDependencyError",
    "Outcome",
    "ResponseError",
    "RetryBudget",
    "ServiceUnavailableError",
    "SessionKey",
    "SwanAuthClient",
    "SwanAuthError",
    "TransportError",
    "UsageError",
    "__version__",
    "decrypt_user_data",
    "swanid_signature",
    "verify_swanid_signature",
]
