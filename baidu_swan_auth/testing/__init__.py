"""A fake of Baidu's ``jscode2sessionkey`` endpoint and access-token APIs, for tests, demos and
benchmarks.

[`FakeBaiduServer`][baidu_swan_auth.testing.FakeBaiduServer] is a real HTTP server on the
loopback interface. It speaks the same protocol as
``https://spapi.baidu.com/oauth/jscode2sessionkey``: single-use codes, a form-encoded ``POST``
body carrying ``code``, ``client_id`` and ``sk``, and OAuth-style JSON errors. Tests issue codes,
script faults (gateway errors, dropped connections, truncated or huge bodies, redirects, delays,
arbitrary answers for fuzzing) and then inspect what the server received. Given an
``ssl.SSLContext`` it serves HTTPS instead, to test TLS settings.

The same server also answers the access-token APIs of ``openapi.baidu.com`` below
[`openapi_url`][baidu_swan_auth.testing.FakeBaiduServer.openapi_url]: the token
([`TOKEN_PATH`][baidu_swan_auth.testing.TOKEN_PATH]), the v2 session key, which spends the same
codes ([`GETSESSIONKEY_PATH`][baidu_swan_auth.testing.GETSESSIONKEY_PATH]), and the unionid
([`GETUNIONID_PATH`][baidu_swan_auth.testing.GETUNIONID_PATH]). Tests can make token fetches
slow, tokens short-lived or revoked, and script faults per path.

Example:
    ```python
    async with FakeBaiduServer() as fake:
        code = fake.issue_code(openid="user-1")
        fake.script(code, ErrorStatus(503, retry_after="1"))
        ...  # exchange `code` against `fake.url` with `fake.client_id` / `fake.secret`
        assert fake.is_spent(code)
    ```

From synchronous code (or any event loop), run it on its own thread instead:

```python
with FakeBaiduServer() as fake:
    ...
```

This package deliberately imports neither pytest nor the client: the CLI demo and benchmark
scripts use it on their own. Run ``python -m baidu_swan_auth.testing`` to serve it in the
foreground.
"""

from ._cli import main
from ._faults import (
    Arbitrary,
    Delay,
    Drop,
    ErrnoBody,
    ErrorStatus,
    Fault,
    HugeBody,
    RawBody,
    Redirect,
    Truncated,
)
from ._server import FakeBaiduServer
from ._userdata import encrypt_user_data
from ._values import (
    DEFAULT_CLIENT_ID,
    DEFAULT_SECRET,
    ENDPOINT_PATH,
    GETSESSIONKEY_PATH,
    GETUNIONID_PATH,
    REDIRECT_TARGET_PATH,
    TOKEN_PATH,
    V2_INVALID_CODE_ERRNO,
    Grant,
    RecordedRequest,
    UnknownCodeError,
)

__all__ = [
    "DEFAULT_CLIENT_ID",
    "DEFAULT_SECRET",
    "ENDPOINT_PATH",
    "GETSESSIONKEY_PATH",
    "GETUNIONID_PATH",
    "REDIRECT_TARGET_PATH",
    "TOKEN_PATH",
    "V2_INVALID_CODE_ERRNO",
    "Arbitrary",
    "Delay",
    "Drop",
    "ErrnoBody",
    "ErrorStatus",
    "FakeBaiduServer",
    "Fault",
    "Grant",
    "HugeBody",
    "RawBody",
    "RecordedRequest",
    "Redirect",
    "Truncated",
    "UnknownCodeError",
    "encrypt_user_data",
    "main",
]

# The package's layout is private: its classes and functions report this package as their module,
# as the top-level package's do (see `baidu_swan_auth/__init__.py`), so that reprs and tracebacks
# show `baidu_swan_auth.testing.ErrorStatus`, pickle finds the class where users import it from,
# and `typing.get_type_hints` resolves string annotations here.
for _name in __all__:
    _value = globals()[_name]
    if (isinstance(_value, type) or callable(_value)) and _value.__module__.startswith(
        f"{__name__}._"
    ):
        _value.__module__ = __name__
del _name, _value
