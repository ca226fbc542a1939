"""Blanking what Baidu (or something posing as it) echoes back: the secret and the code in every
form they took on the wire, without mangling Baidu's own error strings (issue #13, item 3)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from baidu_swan_auth import ApiError, InvalidClientError, InvalidCodeError, SwanAuthClient
from baidu_swan_auth._answers import interpret_answer
from baidu_swan_auth._protocol import AttemptFailure, Credentials
from baidu_swan_auth.testing import ErrorStatus, FakeBaiduServer

from ..helpers import MakeClient

SECRET = "s/cr+t=&%@ secret é"
CODE = "user@open-source/host+code=1&2"
NO_HEADERS: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict())


def _forms(value: str) -> list[str]:
    return [value, quote_plus(value), quote(value, safe=""), quote(value)]


def _echo(value: str) -> str:
    return " ".join(_forms(value))


@pytest.fixture
def nasty_fake() -> Iterator[FakeBaiduServer]:
    server = FakeBaiduServer(secret=SECRET)
    server.start_in_thread()
    try:
        yield server
    finally:
        server.stop_thread()


@pytest.mark.parametrize("status", [200, 400, 401, 500, 503])
@pytest.mark.parametrize("key", ["error_description", "errmsg", "msg"])
def test_every_wire_form_of_an_echo_is_blanked(status: int, key: str) -> None:
    body = {"error": "invalid_client", key: f"sk={_echo(SECRET)} code={_echo(CODE)}"}
    if key != "error_description":
        body = {"errno": 7, key: body[key]}

    with pytest.raises(AttemptFailure) as caught:
        interpret_answer(
            status, NO_HEADERS, json.dumps(body).encode(), Credentials("id", SECRET), CODE
        )

    error = caught.value.error
    shown = f"{error} {error!r} {getattr(error, 'description', '')}"
    for form in _forms(SECRET) + _forms(CODE):
        assert form not in shown, form
    assert "***" in shown


def test_a_secret_sent_back_as_the_error_token_is_blanked() -> None:
    for form in _forms(SECRET):
        body = json.dumps({"error": form}).encode()
        with pytest.raises(AttemptFailure) as caught:
            interpret_answer(400, NO_HEADERS, body, Credentials("id", SECRET), CODE)
        error = caught.value.error
        assert isinstance(error, ApiError)
        assert error.error == "***"
        assert form not in str(error)


@pytest.mark.parametrize("code", ["a", "grant", "invalid", "inv", "_"])
async def test_a_short_code_does_not_mangle_baidus_error_string(
    fake: FakeBaiduServer, client: SwanAuthClient, code: str
) -> None:
    with pytest.raises(InvalidCodeError) as caught:
        await client.exchange(code)  # never issued: Baidu says invalid_grant
    assert caught.value.error == "invalid_grant"
    assert "invalid_grant" in str(caught.value)


async def test_a_long_code_inside_a_known_error_token_is_left_alone(
    make_client: MakeClient,
) -> None:
    client = make_client()
    with pytest.raises(InvalidCodeError) as caught:
        await client.exchange("invalid_gran")  # 12 characters, all of them inside the token
    assert caught.value.error == "invalid_grant"


async def test_an_echo_of_the_code_in_an_unknown_error_token_is_blanked(
    fake: FakeBaiduServer, client: SwanAuthClient
) -> None:
    code = fake.issue_code()
    fake.script(code, ErrorStatus(400, error=f"bad:{code}"))
    with pytest.raises(ApiError) as caught:
        await client.exchange(code)
    assert caught.value.error == "bad:***"
    assert code not in str(caught.value)


async def test_an_echo_through_the_fake_is_blanked_in_the_exception(
    nasty_fake: FakeBaiduServer,
) -> None:
    nasty_fake.script(CODE, ErrorStatus(400, error="invalid_client", description=_echo(SECRET)))
    async with SwanAuthClient(nasty_fake.client_id, SECRET, endpoint=nasty_fake.url) as client:
        with pytest.raises(InvalidClientError) as caught:
            await client.exchange(CODE)
    for form in _forms(SECRET):
        assert form not in f"{caught.value} {caught.value.description}"


def test_an_echo_is_blanked_in_the_records_and_the_summary_of_a_bulk_job(
    nasty_fake: FakeBaiduServer, tmp_path: Path
) -> None:
    codes = [f"user{n}@open/host+code" for n in range(3)]
    for code in codes:
        nasty_fake.script(
            code,
            ErrorStatus(
                503, error=f"busy {_echo(code)}", description=f"{_echo(SECRET)} {_echo(code)}"
            ),
            ErrorStatus(
                400, error=quote_plus(SECRET), description=f"{_echo(SECRET)} {_echo(code)}"
            ),
        )
    source = tmp_path / "codes.jsonl"
    source.write_text("".join(json.dumps({"code": code}) + "\n" for code in codes))
    output = tmp_path / "records.jsonl"
    env = {key: value for key, value in os.environ.items() if not key.startswith("BAIDU_SWAN_")}
    env.update(
        BAIDU_SWAN_CLIENT_ID=nasty_fake.client_id,
        BAIDU_SWAN_SECRET=SECRET,
        BAIDU_SWAN_ENDPOINT=nasty_fake.url,
    )

    result = subprocess.run(
        [sys.executable, "-m", "baidu_swan_auth.cli", "exchange", str(source), "-o", str(output)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 1, result.stderr
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(records) == 3
    for record in records:
        assert record["description"]
        for form in _forms(SECRET) + _forms(record["code"]):
            assert form not in record["description"]
            assert form not in record["error"]
    for form in _forms(SECRET) + [form for code in codes for form in _forms(code)]:
        assert form not in result.stderr, form
    assert "(api_error: 3)" in result.stderr, "the summary counts kinds, not Baidu's text"


@pytest.mark.parametrize("key", ["error", "errno", "error_code"])
@pytest.mark.parametrize("status", [200, 400, 503])
def test_a_digit_only_code_or_secret_echoed_as_a_json_number_is_blanked(
    key: str, status: int
) -> None:
    code, secret = "881234567890", "90817263545463728190"
    credentials = Credentials("id", secret)
    for echoed in (code, secret):
        body = json.dumps({key: int(echoed), "error_description": "x"}).encode()
        with pytest.raises(AttemptFailure) as caught:
            interpret_answer(status, NO_HEADERS, body, credentials, code)
        error = caught.value.error
        shown = f"{error} {error!r} {error.description} {getattr(error, 'error', None)}"
        assert echoed not in shown, (key, status, shown)
