"""The shape of ``baidu_swan_auth.testing``: a package of one-job modules over the public face.

Its behaviour is tested in fake/test_fake.py, client/test_fault_matrix.py and
client/test_fuzzed_answers.py; this file pins
what its layout promises (issue #10): it imports nothing private of the SDK, no module grows
long without saying why, each fault carries its own behaviour, and the API reference lists
every public name.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import aiohttp
import attrs
import pytest

import baidu_swan_auth.testing as testing
from baidu_swan_auth.testing import ErrorStatus, FakeBaiduServer, Fault

PACKAGE_DIR = Path(testing.__file__).resolve().parent
API_PAGE = Path(__file__).resolve().parents[2] / "docs" / "api.md"
LONG = 400


def _modules() -> list[Path]:
    return sorted(PACKAGE_DIR.glob("*.py"))


def _imported_modules(path: Path) -> list[str]:
    """The absolute names of the modules ``path`` imports from."""
    package = "baidu_swan_auth.testing"
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                names.append(f"{base}.{node.module}" if node.module else base)
            else:
                names.append(node.module or "")
    return names


@pytest.mark.parametrize("path", _modules(), ids=lambda path: path.name)
def test_the_package_uses_only_the_public_face(path: Path) -> None:
    """Its own private modules aside, it imports only public modules of the SDK."""
    private = [
        name
        for name in _imported_modules(path)
        if name.startswith("baidu_swan_auth")
        and not name.startswith("baidu_swan_auth.testing")
        and any(part.startswith("_") for part in name.split("."))
    ]
    assert private == []


@pytest.mark.parametrize("path", _modules(), ids=lambda path: path.name)
def test_no_module_is_long_without_saying_why(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    docstring = ast.get_docstring(ast.parse(text)) or ""
    if len(text.splitlines()) > LONG:
        assert f"over {LONG} lines" in docstring.lower(), f"{path.name}: say why it is long"


def test_every_fault_carries_its_behaviour() -> None:
    """No interpreter in the server: each fault class defines what it does to a request."""
    faults = [
        value
        for value in vars(testing).values()
        if isinstance(value, type) and issubclass(value, Fault) and value is not Fault
    ]
    assert len(faults) == 9
    assert [cls.__name__ for cls in faults if "_respond" not in vars(cls)] == []


@attrs.frozen
class _Overloaded(ErrorStatus):
    """A fault of the test's own, refining a public one."""

    status: int = 503


@attrs.frozen
class _Nothing(Fault):
    """A fault that says nothing about what it does."""


async def _post(fake: FakeBaiduServer, code: str) -> tuple[int, str]:
    fields = {"code": code, "client_id": fake.client_id, "sk": fake.secret}
    async with aiohttp.ClientSession() as session, session.post(fake.url, data=fields) as answer:
        return answer.status, await answer.text()


async def test_a_subclass_of_a_fault_behaves_like_it(fake: FakeBaiduServer) -> None:
    code = fake.issue_code()
    fake.script(code, _Overloaded(retry_after="3"))

    status, body = await _post(fake, code)

    assert status == 503
    assert "fake-gateway" in body
    assert fake.requests[-1].fault == "_Overloaded"
    assert not fake.is_spent(code)


async def test_a_fault_without_behaviour_fails_the_request(fake: FakeBaiduServer) -> None:
    code = fake.issue_code()
    fake.script(code, _Nothing())

    status, _ = await _post(fake, code)

    assert status == 500
    assert not fake.is_spent(code)


def test_the_api_reference_lists_every_public_name_of_testing() -> None:
    text = API_PAGE.read_text(encoding="utf-8")
    block = text.split("::: baidu_swan_auth.testing\n", 1)[1].split(":::", 1)[0]
    listed = re.findall(r"^\s+- (\w+)$", block, flags=re.MULTILINE)
    assert sorted(listed) == sorted(testing.__all__)
