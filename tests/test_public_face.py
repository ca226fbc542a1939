"""The package's public face: what each public module exports, and that its names show public paths.

In the style of httpx's ``tests/test_exported_members.py``: the exported names are pinned, so
adding or dropping one is a deliberate change to this file. Public names report a public module
as their ``__module__`` (``baidu_swan_auth.InvalidCodeError``, not ``baidu_swan_auth._errors``), so
tracebacks and reprs show where users import them from. That module must export the name: pickle
finds a class by its ``__module__``, and ``typing.get_type_hints`` resolves string annotations in
that module's namespace.
"""

from __future__ import annotations

import importlib
import inspect
import pickle
import pkgutil
import sys
import traceback
import types
import typing
from typing import Any

import aiohttp
import pytest
import yarl
from multidict import CIMultiDict, CIMultiDictProxy

import baidu_swan_auth
from baidu_swan_auth import (
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
    RetryBudget,
    ServiceUnavailableError,
    SwanAuthClient,
    SwanAuthError,
    TokenRejectedError,
    TransportError,
    UsageError,
    bulk,
    legacy,
    testing,
)
from baidu_swan_auth.legacy import LegacyRedirectRefusedError, LegacyRequestNotResentError
from baidu_swan_auth.testing import FakeBaiduServer, UnknownCodeError

PACKAGE = [
    "AccessToken",
    "ApiError",
    "AttemptEvent",
    "ClientClosedError",
    "CodeConsumedError",
    "ConfigurationError",
    "DEFAULT_ENDPOINT",
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

BULK = ["Outcome", "RateLimiter", "error_label"]

LEGACY = [
    "LEGACY_ENDPOINT",
    "LegacyRedirectRefusedError",
    "LegacyRequestNotResentError",
    "get_session_key_by_code",
    "legacy_rewrite_middleware",
    "rewrite_legacy_url",
]

TESTING = [
    "Arbitrary",
    "DEFAULT_CLIENT_ID",
    "DEFAULT_SECRET",
    "Delay",
    "Drop",
    "ENDPOINT_PATH",
    "ErrnoBody",
    "ErrorStatus",
    "FakeBaiduServer",
    "Fault",
    "GETSESSIONKEY_PATH",
    "GETUNIONID_PATH",
    "Grant",
    "HugeBody",
    "RawBody",
    "REDIRECT_TARGET_PATH",
    "RecordedRequest",
    "Redirect",
    "TOKEN_PATH",
    "Truncated",
    "UnknownCodeError",
    "V2_INVALID_CODE_ERRNO",
    "encrypt_user_data",
    "main",
]

CRYPTO = [
    "decrypt_user_data",
    "require_cryptography",
    "swanid_signature",
    "verify_swanid_signature",
]

PYTEST_PLUGIN = ["fake_baidu", "fake_baidu_env"]

CLI = ["main"]

REDIS = ["DEFAULT_PREFIX", "RedisTokenStore"]

OTEL = ["BaiduSwanAuthInstrumentor"]

PUBLIC_MODULES = {
    "baidu_swan_auth": PACKAGE,
    "baidu_swan_auth.bulk": BULK,
    "baidu_swan_auth.legacy": LEGACY,
    "baidu_swan_auth.testing": TESTING,
    "baidu_swan_auth.crypto": CRYPTO,
    "baidu_swan_auth.pytest_plugin": PYTEST_PLUGIN,
    "baidu_swan_auth.cli": CLI,
    "baidu_swan_auth.redis": REDIS,
    "baidu_swan_auth.otel": OTEL,
}


def _public_names() -> list[tuple[str, str, Any]]:
    """(module, name, value) for every name a public module exports."""
    found = []
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        found += [(module_name, name, getattr(module, name)) for name in module.__all__]
    return found


def _public_classes() -> list[type]:
    classes = {id(value): value for _, _, value in _public_names() if isinstance(value, type)}
    return list(classes.values())


def _private_modules() -> list[str]:
    return sorted(
        f"baidu_swan_auth.{info.name}"
        for info in pkgutil.iter_modules(baidu_swan_auth.__path__)
        if info.name.startswith("_")
    )


# ----------------------------------------------------------------------------- exported names


@pytest.mark.parametrize(("module_name", "pinned"), PUBLIC_MODULES.items())
def test_exported_names_are_pinned(module_name: str, pinned: list[str]) -> None:
    module = importlib.import_module(module_name)
    assert sorted(module.__all__) == sorted(pinned)
    assert len(set(module.__all__)) == len(module.__all__)


def test_every_public_attribute_of_the_package_is_exported() -> None:
    """As httpx checks: nothing without an underscore is reachable at the top level by accident.
    The package's public submodules are attributes too, once imported."""
    attributes = {
        name
        for name, value in vars(baidu_swan_auth).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert attributes | {"__version__"} == set(baidu_swan_auth.__all__)


def test_rate_limiter_is_exported_at_the_top_level_and_from_bulk() -> None:
    assert baidu_swan_auth.RateLimiter is bulk.RateLimiter


def test_private_modules_export_only_what_a_public_module_re_exports() -> None:
    """A private module's ``__all__`` is what the public modules re-export from it, not the
    helpers other private modules import."""
    exported = {id(value) for _, _, value in _public_names()}
    strays = {
        module_name: sorted(
            name
            for name in importlib.import_module(module_name).__all__
            if id(getattr(importlib.import_module(module_name), name)) not in exported
        )
        for module_name in _private_modules()
    }
    assert {name: listed for name, listed in strays.items() if listed} == {}


def test_every_private_module_has_an_all() -> None:
    modules = [importlib.import_module(name) for name in _private_modules()]
    assert [module.__name__ for module in modules if not hasattr(module, "__all__")] == []


# ------------------------------------------------------------------------ public __module__


def test_every_public_name_reports_a_public_module_that_exports_it() -> None:
    wrong = []
    for module_name, name, value in _public_names():
        if not (inspect.isclass(value) or inspect.isfunction(value)):
            continue
        home = value.__module__
        home_module = sys.modules[home]
        if (
            any(part.startswith("_") for part in home.split("."))
            or name not in getattr(home_module, "__all__", ())
            or getattr(home_module, name) is not value
            or value.__qualname__ != name
        ):
            wrong.append(f"{module_name}.{name} reports {home}.{value.__qualname__}")
    assert wrong == []


def test_public_classes_report_the_package() -> None:
    assert InvalidCodeError.__module__ == "baidu_swan_auth"
    assert SwanAuthClient.__module__ == "baidu_swan_auth"
    assert repr(RetryBudget) == "<class 'baidu_swan_auth.RetryBudget'>"
    # RateLimiter and Outcome live below the client (_pacing, _models) since the house's layers;
    # the package exports both, and bulk re-exports them.
    assert baidu_swan_auth.RateLimiter.__module__ == "baidu_swan_auth"
    assert baidu_swan_auth.Outcome.__module__ == "baidu_swan_auth"
    assert testing.FakeBaiduServer.__module__ == "baidu_swan_auth.testing"
    assert legacy.LegacyRedirectRefusedError.__module__ == "baidu_swan_auth.legacy"


# ----------------------------------------------------------------------------------- pickle


def _request_info() -> aiohttp.RequestInfo:
    url = yarl.URL("https://spapi.baidu.com/oauth/jscode2sessionkey")
    headers = CIMultiDictProxy(CIMultiDict({"Content-Type": "application/x-www-form-urlencoded"}))
    return aiohttp.RequestInfo(url, "POST", headers, url)


def _spent(error: SwanAuthError) -> SwanAuthError:
    error.code_may_be_spent = True
    return error


def _exceptions() -> list[BaseException]:
    """One instance of every public exception, each attribute away from its default."""
    return [
        _spent(SwanAuthError("base", error="e", description="d", status=500, attempts=3)),
        InvalidInputError("bad code", error="e", description="d"),
        ConfigurationError("bad setting", description="d"),
        UsageError("wrong loop", description="d"),
        ApiError("api", error="10010100", description="d", status=200, attempts=1, errno=10010100),
        InvalidCodeError("used", error="invalid_grant", description="d", status=400, attempts=1),
        _spent(CodeConsumedError("spent", error="invalid_grant", status=400, attempts=2, errno=7)),
        InvalidClientError("secret", error="invalid_client", status=401, attempts=1),
        TokenRejectedError("revoked", error="110", status=200, attempts=2, errno=110),
        ServiceUnavailableError("busy", error="slow_down", status=429, attempts=4, retry_after=2.5),
        _spent(TransportError("reset", description="d", attempts=4)),
        _spent(ExchangeTimeoutError("timeout", attempts=2)),
        ClientClosedError("closed", attempts=1),
        ResponseError("html", description="d", status=502, attempts=1),
        DecryptError("stale", reason="padding"),
        MissingDependencyError("pip install baidu-swan-auth[crypto]", package="cryptography"),
        LegacyRequestNotResentError("connection dropped"),
        LegacyRedirectRefusedError(_request_info(), (), status=302, message="refused a redirect"),
        UnknownCodeError("never issued"),
    ]


def test_every_public_exception_has_a_pickle_case() -> None:
    public = {cls for cls in _public_classes() if issubclass(cls, BaseException)}
    assert public == {type(error) for error in _exceptions()}


@pytest.mark.parametrize("error", _exceptions(), ids=lambda error: type(error).__name__)
def test_every_public_exception_pickles_with_its_attributes(error: BaseException) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert copy.args == error.args
    assert vars(copy) == vars(error)


# ------------------------------------------------------------------------------ type hints


@pytest.mark.parametrize("cls", _public_classes(), ids=lambda cls: cls.__qualname__)
def test_type_hints_resolve_for_every_public_class(cls: type) -> None:
    """get_type_hints() evaluates each class's string annotations in the namespace of the module
    its ``__module__`` names. The exceptions report ``baidu_swan_auth``, which has no ``ClassVar``:
    ``_errors.py`` does without ``from __future__ import annotations``, so that its annotations
    are objects, not strings that would need that namespace."""
    hints = typing.get_type_hints(cls)
    assert all(not isinstance(hint, str) for hint in hints.values())


@pytest.mark.parametrize(
    "function",
    [value for _, _, value in _public_names() if inspect.isfunction(value)],
    ids=lambda function: f"{function.__module__}.{function.__qualname__}",
)
def test_type_hints_resolve_for_every_public_function(function: types.FunctionType) -> None:
    typing.get_type_hints(function)


# ------------------------------------------------------------------ tracebacks and reprs


async def test_a_traceback_names_the_public_class(
    fake: FakeBaiduServer, client: SwanAuthClient
) -> None:
    code = fake.issue_code()
    await client.exchange(code)

    with pytest.raises(InvalidCodeError) as caught:
        await client.exchange(code)

    text = "".join(traceback.format_exception(caught.value))
    assert text.splitlines()[-1].startswith("baidu_swan_auth.InvalidCodeError: ")
    assert "baidu_swan_auth._errors" not in text


def test_reprs_show_no_private_path() -> None:
    budget = RetryBudget()
    assert "._" not in repr(budget)
    assert repr(budget).startswith("<RetryBudget ")
    for cls in _public_classes():
        assert "._" not in repr(cls), cls
