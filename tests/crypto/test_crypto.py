"""Decrypting user data with the session key, and swanid signatures.

The layout is built by hand here (``_layout`` and ``_aes_encrypt``), independently of
``baidu_swan_auth.testing.encrypt_user_data``, so that a mistake shared by the package's
encryptor and decryptor cannot make the round trips pass.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pickle
import struct
import subprocess
import sys
import textwrap
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import baidu_swan_auth
from baidu_swan_auth import (
    DecryptError,
    InvalidInputError,
    MissingDependencyError,
    SessionKey,
    SwanAuthClient,
    SwanAuthError,
    decrypt_user_data,
    swanid_signature,
    verify_swanid_signature,
)
from baidu_swan_auth.crypto import require_cryptography
from baidu_swan_auth.testing import FakeBaiduServer, encrypt_user_data

from ..helpers import traceback_frames

# The example of Baidu's log_userdata.md.
APP_KEY = "y2dTfnWfkx2OXttMEMWlGHoB1KzMogm7"
SESSION_KEY = "1df09d0a1677dd72b8325aec59576e0c"
IV = "1df09d0a1677dd72b8325Q=="
DATA = (
    "OpCoJgs7RrVgaMNDixIvaCIyV2SFDBNLivgkVqtzq2GC10egsn+PKmQ/+5q+chT8xzldLUog2haTItyIkKyvzvmXonBQ"
    "LIMeq54axAu9c3KG8IhpFD6+ymHocmx07ZKi7eED3t0KyIxJgRNSDkFk5RV1ZP2mSWa7ZgCXXcAbP0RsiUcvhcJfrSwlp"
    "sm0E1YJzKpYy429xrEEGvK+gfL+Cw=="
)
PLAINTEXT_JSON = '{"openid":"open_id","nickname":"baidu_user","headimgurl":"url of image","sex":1}'
PAYLOAD = {"openid": "open_id", "nickname": "baidu_user", "headimgurl": "url of image", "sex": 1}


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _aes(key: bytes, iv: bytes) -> Cipher[modes.CBC]:
    return Cipher(algorithms.AES(key), modes.CBC(iv))


def _aes_encrypt(plain: bytes, key: bytes, iv: bytes) -> str:
    assert len(plain) % 16 == 0
    encryptor = _aes(key, iv).encryptor()
    return _b64(encryptor.update(plain) + encryptor.finalize())


def _aes_decrypt(data: str, key: str, iv: str) -> bytes:
    decryptor = _aes(base64.b64decode(key), base64.b64decode(iv)).decryptor()
    return decryptor.update(base64.b64decode(data)) + decryptor.finalize()


def _layout(
    body: bytes, app_key: bytes, *, pad: int | None = None, length: int | None = None
) -> bytes:
    """16 random bytes | 4-byte big-endian length | body | AppKey | padding."""
    plain = os.urandom(16) + struct.pack(">I", len(body) if length is None else length)
    plain += body + app_key
    if pad is None:
        pad = 32 - len(plain) % 32
    return plain + bytes([pad]) * pad


class Keys:
    """A random session key and IV, raw and in base64."""

    def __init__(self) -> None:
        self.key = os.urandom(24)
        self.iv = os.urandom(16)
        self.session_key = _b64(self.key)
        self.iv_b64 = _b64(self.iv)

    def seal(self, plain: bytes) -> str:
        return _aes_encrypt(plain, self.key, self.iv)

    def decrypt(self, data: str, app_key: str = APP_KEY) -> dict[str, Any]:
        return decrypt_user_data(data, self.iv_b64, self.session_key, app_key)


def _decrypt_error(data: Any, iv: Any, session_key: Any, app_key: Any) -> DecryptError:
    with pytest.raises(DecryptError) as caught:
        decrypt_user_data(data, iv, session_key, app_key)
    return caught.value


# ------------------------------------------------------------------------------- the vector


def test_the_official_vector_decrypts_to_its_documented_json() -> None:
    assert decrypt_user_data(DATA, IV, SESSION_KEY, APP_KEY) == PAYLOAD


def test_the_official_vector_through_session_key_decrypt() -> None:
    key = SessionKey(openid="open_id", session_key=SESSION_KEY)
    assert key.decrypt(DATA, IV, APP_KEY) == PAYLOAD


def test_the_official_vector_pads_to_32_bytes() -> None:
    # Why a 16-byte PKCS#7 unpadder rejects real data: this pad count is 28.
    plain = _aes_decrypt(DATA, SESSION_KEY, IV)
    assert plain[-1] == 28
    assert plain[20:-28] == PLAINTEXT_JSON.encode() + APP_KEY.encode()


def test_the_test_encryptor_reproduces_the_official_vector_byte_for_byte() -> None:
    prefix = _aes_decrypt(DATA, SESSION_KEY, IV)[:16]
    data = encrypt_user_data(PAYLOAD, IV, SESSION_KEY, APP_KEY, random=lambda n: prefix[:n])
    assert data == DATA


def test_the_official_vector_with_another_app_key_blames_the_app_key() -> None:
    # The data decrypts to valid JSON: the session key is right, the AppKey passed is not.
    error = _decrypt_error(DATA, IV, SESSION_KEY, "y2dTfnWfkx2OXttMEMWlGHoB1KzMogm8")
    assert error.reason == "app_key"
    assert not error.stale_key
    assert "not the AppKey" in str(error)
    assert "stale" not in str(error)


@pytest.mark.parametrize("app_id", ["16504519", "y2dTfnWfkx2OXttMEMWlGHoB1KzMogm7x", "y"])
def test_the_official_vector_with_an_app_key_of_another_length_blames_the_app_key(
    app_id: str,
) -> None:
    # The numeric AppID passed by mistake: the padding, the length field and the JSON all fit,
    # so the bytes after the JSON are the real AppKey, whatever the length of the one passed.
    error = _decrypt_error(DATA, IV, SESSION_KEY, app_id)
    assert error.reason == "app_key"
    assert not error.stale_key
    assert f"app_key has {len(app_id)}" in str(error)
    assert APP_KEY not in str(error)


# ------------------------------------------------------------------------------- round trips


def _json_of_size(size: int) -> bytes:
    """A JSON object of exactly ``size`` bytes (at least 2), with non-ASCII in it from 10 on."""
    if size < 10:
        return b"{" + b" " * (size - 2) + b"}"
    head = '{"k":"é'
    text = head + "x" * (size - len(head.encode()) - 2) + '"}'
    encoded = text.encode()
    assert len(encoded) == size
    return encoded


def test_round_trip_for_every_payload_size_up_to_320_bytes() -> None:
    for size in range(2, 320):  # a loop, not parametrize: 300 test items would be slow
        keys = Keys()
        body = _json_of_size(size)
        data = keys.seal(_layout(body, APP_KEY.encode()))
        assert keys.decrypt(data) == json.loads(body), size


def _size_for_pad(pad: int, app_key: bytes) -> int:
    """A body size from 40 to 55 for which this pad count ends on a 16-byte boundary."""
    return 40 + (-(16 + 4 + 40 + len(app_key) + pad)) % 16


def test_round_trip_for_every_pad_count_from_1_to_32() -> None:
    for app_key in (b"app-key", APP_KEY.encode()):
        for pad in range(1, 33):
            keys = Keys()
            body = _json_of_size(_size_for_pad(pad, app_key))
            plain = _layout(body, app_key, pad=pad)
            assert len(plain) % 16 == 0
            assert keys.decrypt(keys.seal(plain), app_key.decode()) == json.loads(body), pad


@pytest.mark.parametrize("app_key", ["a", "y2dTfnWfkx2OXttMEMWlGHoB1KzMogm7", "k" * 100, "应用键"])
def test_round_trip_for_app_keys_of_different_lengths(app_key: str) -> None:
    keys = Keys()
    payload = {"nickname": "百度用户 🐻", "sex": 2, "nested": {"a": [1, None, True]}}
    assert keys.decrypt(keys.seal(_layout(_dumps(payload), app_key.encode())), app_key) == payload


def _dumps(payload: object) -> bytes:
    return json.dumps(payload, ensure_ascii=False).encode()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@given(
    key=st.binary(min_size=24, max_size=24),
    iv=st.binary(min_size=16, max_size=16),
    payload=st.dictionaries(st.text(max_size=10), json_values, max_size=6),
    app_key=st.text(min_size=1, max_size=40),
)
def test_round_trip_property(key: bytes, iv: bytes, payload: dict[str, Any], app_key: str) -> None:
    data = _aes_encrypt(_layout(_dumps(payload), app_key.encode()), key, iv)
    assert decrypt_user_data(data, _b64(iv), _b64(key), app_key) == payload
    # The package's test encryptor agrees with the hand-built layout.
    assert (
        decrypt_user_data(
            encrypt_user_data(payload, _b64(iv), _b64(key), app_key), _b64(iv), _b64(key), app_key
        )
        == payload
    )


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 31, 32, 33, 100, 300])
def test_the_test_encryptor_with_every_forced_pad(size: int) -> None:
    keys = Keys()
    body = b"{" + b" " * max(size - 2, 0) + b"}"
    payload_len = 16 + 4 + len(body) + len(APP_KEY)
    for pad in range(1, 33):
        if (payload_len + pad) % 16:
            with pytest.raises(ValueError, match="padding"):
                encrypt_user_data(body, keys.iv_b64, keys.session_key, APP_KEY, padding=pad)
            continue
        data = encrypt_user_data(body, keys.iv_b64, keys.session_key, APP_KEY, padding=pad)
        assert keys.decrypt(data) == {}
        assert _aes_decrypt(data, keys.session_key, keys.iv_b64)[-1] == pad


# ------------------------------------------------------------------------------- lenient base64


def _variants(text: str) -> list[str]:
    wrapped = "\n".join(textwrap.wrap(text, 76))
    return [
        f"  {text}\n",
        wrapped,
        wrapped.replace("\n", "\r\n"),
        text.rstrip("="),
        text.replace("+", "-").replace("/", "_"),
        text.replace("+", "-").replace("/", "_").rstrip("="),
    ]


@pytest.mark.parametrize("which", ["data", "iv", "session_key"])
def test_harmless_base64_variations_are_accepted(which: str) -> None:
    arguments = {"data": DATA, "iv": IV, "session_key": SESSION_KEY}
    for variant in _variants(arguments[which]):
        changed = {**arguments, which: variant}
        assert decrypt_user_data(app_key=APP_KEY, **changed) == PAYLOAD, repr(variant)


# ------------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("value", [None, 42, b"base64", bytearray(b"x"), ["x"], 1.5])
@pytest.mark.parametrize("position", range(4))
def test_a_non_str_argument_is_a_decrypt_error(position: int, value: Any) -> None:
    arguments: list[Any] = [DATA, IV, SESSION_KEY, APP_KEY]
    arguments[position] = value
    error = _decrypt_error(*arguments)
    assert error.reason == "argument"
    assert type(value).__name__ in str(error)
    assert not error.stale_key


def test_a_session_key_object_in_place_of_the_string_gets_a_hint() -> None:
    key = SessionKey(openid="o", session_key=SESSION_KEY)
    error = _decrypt_error(DATA, IV, key, APP_KEY)
    assert "key.session_key" in str(error)
    assert SESSION_KEY not in str(error)


def test_an_empty_app_key_is_a_decrypt_error() -> None:
    assert _decrypt_error(DATA, IV, SESSION_KEY, "").reason == "argument"


def test_an_app_key_with_a_lone_surrogate_is_a_decrypt_error() -> None:
    error = _decrypt_error(DATA, IV, SESSION_KEY, "app\ud800key")
    assert error.reason == "argument"
    assert error.__context__ is None


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("!!!!", "not valid base64"),
        ("QUJD RA==", "space"),  # a '+' lost to form decoding
        ("ab+c-d==", "alphabets"),
        ("QUJDRA==é", "non-ASCII"),
        ("QUJDR", "not valid base64"),  # 5 characters: no padding makes that whole
        ("QQ=", "not valid base64"),  # padding present, but wrong
        ("QQ==QQ==", "not valid base64"),
        ("====", "not valid base64"),
    ],
)
@pytest.mark.parametrize("which", ["data", "iv", "session_key"])
def test_bad_base64_is_a_decrypt_error(which: str, bad: str, message: str) -> None:
    arguments = {"data": DATA, "iv": IV, "session_key": SESSION_KEY, "app_key": APP_KEY}
    arguments[which] = bad
    with pytest.raises(DecryptError, match=message) as caught:
        decrypt_user_data(**arguments)
    assert caught.value.reason == "base64"
    assert which in str(caught.value)


@pytest.mark.parametrize("size", [0, 1, 16, 23, 25, 32])
def test_a_session_key_of_the_wrong_size_is_a_decrypt_error(size: int) -> None:
    error = _decrypt_error(DATA, IV, _b64(os.urandom(size)), APP_KEY)
    assert error.reason == "key_size"
    assert f"{size} bytes" in str(error)


@pytest.mark.parametrize("size", [0, 8, 15, 17, 24])
def test_an_iv_of_the_wrong_size_is_a_decrypt_error(size: int) -> None:
    assert _decrypt_error(DATA, _b64(os.urandom(size)), SESSION_KEY, APP_KEY).reason == "iv_size"


@pytest.mark.parametrize("size", [0, 1, 15, 17, 33, 159])
def test_ciphertext_not_in_whole_blocks_is_a_decrypt_error(size: int) -> None:
    data = _b64(base64.b64decode(DATA)[:size])
    assert _decrypt_error(data, IV, SESSION_KEY, APP_KEY).reason == "data_size"


@pytest.mark.parametrize("last", [0, 33, 64, 255])
def test_a_pad_count_outside_1_to_32_is_a_decrypt_error(last: int) -> None:
    keys = Keys()
    plain = _layout(b"{}", APP_KEY.encode())[:-1] + bytes([last])
    error = _decrypt_error(keys.seal(plain), keys.iv_b64, keys.session_key, APP_KEY)
    assert error.reason == "padding"
    assert error.stale_key
    assert "stale" in str(error)


@pytest.mark.parametrize("pad", [2, 17, 32])
def test_inconsistent_padding_is_a_decrypt_error(pad: int) -> None:
    keys = Keys()
    size = _size_for_pad(pad, APP_KEY.encode())
    plain = bytearray(_layout(_json_of_size(size), APP_KEY.encode(), pad=pad))
    plain[-pad] ^= 0xFF  # the first pad byte no longer equals the pad count
    error = _decrypt_error(keys.seal(bytes(plain)), keys.iv_b64, keys.session_key, APP_KEY)
    assert error.reason == "padding"
    assert "inconsistent" in str(error)


def test_a_pad_longer_than_the_data_is_a_decrypt_error() -> None:
    keys = Keys()
    error = _decrypt_error(keys.seal(bytes([20]) * 16), keys.iv_b64, keys.session_key, APP_KEY)
    assert error.reason == "padding"


@pytest.mark.parametrize("delta", [-100, -1, 1, 2, 2**32 - 1 - 11])
def test_a_length_field_that_does_not_fit_is_a_decrypt_error(delta: int) -> None:
    keys = Keys()
    body = b'{"a":1}'
    plain = _layout(body, APP_KEY.encode(), length=max(len(body) + delta, 0))
    error = _decrypt_error(keys.seal(plain), keys.iv_b64, keys.session_key, APP_KEY)
    assert error.reason == "length"
    assert error.stale_key


def test_data_too_short_for_the_layout_is_a_decrypt_error() -> None:
    keys = Keys()
    plain = os.urandom(16) + bytes([16]) * 16  # the prefix, then only padding
    assert _decrypt_error(keys.seal(plain), keys.iv_b64, keys.session_key, APP_KEY).reason == (
        "length"
    )


@pytest.mark.parametrize("other", ["y2dTfnWfkx2OXttMEMWlGHoB1KzMogm8", "short", APP_KEY + "x"])
def test_another_app_key_is_a_decrypt_error_that_blames_the_app_key(other: str) -> None:
    keys = Keys()
    data = keys.seal(_layout(b'{"a":1}', other.encode()))
    error = _decrypt_error(data, keys.iv_b64, keys.session_key, APP_KEY)
    # Whatever the length of the AppKey the data ends with: the JSON before it fits.
    assert error.reason == "app_key"
    assert not error.stale_key


def test_a_length_field_that_fits_random_bytes_is_still_a_stale_key() -> None:
    keys = Keys()
    # A layout whose "JSON" is not JSON, followed by another AppKey: what a wrong key gives.
    data = keys.seal(_layout(b"\x8f\x00garbage", b"another-app-key"))
    error = _decrypt_error(data, keys.iv_b64, keys.session_key, APP_KEY)
    assert error.reason == "length"
    assert error.stale_key


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\xff\xfe{}",
        b'{"a":"\xc3"}',
        b"not json",
        b"[1, 2]",
        b'"a string"',
        b"42",
        b"null",
        b'{"a": NaN}',
        b'{"a": Infinity}',
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a": ' + b"9" * 5000 + b"}",
        b'{"a":1} trailing',
    ],
)
def test_a_payload_that_is_not_a_json_object_is_a_decrypt_error(body: bytes) -> None:
    keys = Keys()
    error = _decrypt_error(
        keys.seal(_layout(body, APP_KEY.encode())), keys.iv_b64, keys.session_key, APP_KEY
    )
    assert error.reason == "json"
    assert not error.stale_key
    # Nothing chained could carry the plaintext (UnicodeDecodeError.object, JSONDecodeError.doc).
    assert error.__cause__ is None
    assert error.__context__ is None


def test_a_wrong_session_key_is_always_a_stale_key_decrypt_error() -> None:
    reasons = set()
    for _ in range(300):
        error = _decrypt_error(DATA, IV, _b64(os.urandom(24)), APP_KEY)
        assert error.stale_key
        reasons.add(error.reason)
    assert "padding" in reasons


def test_a_key_renewed_by_a_new_login_fails_as_stale() -> None:
    old, new = Keys(), Keys()
    data = old.seal(_layout(_dumps({"nickname": "x"}), APP_KEY.encode()))
    error = _decrypt_error(data, old.iv_b64, new.session_key, APP_KEY)
    assert error.stale_key
    assert "swan.login()" in str(error)


def test_a_wrong_iv_only_garbles_the_random_prefix() -> None:
    # CBC: the IV only affects the first block, Baidu's 16 random bytes. Documented, not a bug.
    assert decrypt_user_data(DATA, _b64(os.urandom(16)), SESSION_KEY, APP_KEY) == PAYLOAD


# ------------------------------------------------------------------------------- no leaks


def test_messages_and_reprs_never_show_the_key_or_the_plaintext() -> None:
    keys = Keys()
    secret_json = _dumps({"mobile": "13800000000"})
    cases = [
        (keys.seal(_layout(secret_json, b"other-app-key-xx")), keys.session_key),  # app_key/length
        (keys.seal(_layout(secret_json, APP_KEY.encode(), length=3)), keys.session_key),
        (keys.seal(_layout(secret_json, APP_KEY.encode())), _b64(os.urandom(24))),  # wrong key
        (keys.seal(_layout(b"13800000000", APP_KEY.encode())), keys.session_key),  # not JSON
        (keys.seal(_layout(b"\xff13800000000", APP_KEY.encode())), keys.session_key),
        ("13800000000 !", keys.session_key),
    ]
    for data, session_key in cases:
        error = _decrypt_error(data, keys.iv_b64, session_key, APP_KEY)
        for text in (
            str(error),
            repr(error),
            str(error.args),
            str(pickle.loads(pickle.dumps(error))),
        ):
            assert "13800000000" not in text
            assert session_key not in text
            assert keys.session_key not in text
            assert keys.key.hex() not in text


PHONE = "13812345678"


def _reason_cases() -> list[tuple[str, str, str, str, Any]]:
    """(reason, data, iv, session_key, app_key) for every reason, each with a phone number in
    the plaintext wherever the case gets as far as decrypting."""
    key = _b64(os.urandom(24))
    iv = _b64(os.urandom(16))
    secret_json = {"purePhoneNumber": PHONE}
    sealed = encrypt_user_data(secret_json, iv, key, APP_KEY)
    # A pad count of 0: the decryptor has the whole plaintext, phone number included, in hand.
    plain = _layout(_dumps(secret_json), APP_KEY.encode())[:-1] + b"\0"
    bad_pad = _aes_encrypt(plain, base64.b64decode(key), base64.b64decode(iv))
    # A length field past the end of the data: the decryptor has the plaintext in hand.
    too_long = _layout(_dumps(secret_json), APP_KEY.encode(), length=10**6)
    bad_length = _aes_encrypt(too_long, base64.b64decode(key), base64.b64decode(iv))
    return [
        ("base64", "!!!!", iv, key, APP_KEY),
        ("base64", sealed, iv, key[:16] + " " + key[16:], APP_KEY),  # a '+' lost to a form
        ("key_size", sealed, iv, _b64(os.urandom(20)), APP_KEY),
        ("iv_size", sealed, _b64(os.urandom(12)), key, APP_KEY),
        ("data_size", sealed[:-8], iv, key, APP_KEY),
        ("padding", bad_pad, iv, key, APP_KEY),
        ("length", bad_length, iv, key, APP_KEY),
        ("app_key", encrypt_user_data(secret_json, iv, key, APP_KEY[::-1]), iv, key, APP_KEY),
        ("json", encrypt_user_data(PHONE.encode() + b" ", iv, key, APP_KEY), iv, key, APP_KEY),
        ("json", encrypt_user_data(b"\xff" + PHONE.encode(), iv, key, APP_KEY), iv, key, APP_KEY),
        ("argument", sealed, iv, key, 42),
    ]


def _secret_forms(session_key: str) -> list[str]:
    forms = [PHONE, session_key]
    try:
        raw = base64.b64decode(session_key)
    except ValueError:
        return forms
    return [*forms, repr(raw)[2:-1], raw.hex()] if raw else forms


@pytest.mark.parametrize("via", ["function", "session_key"])
def test_no_frame_of_a_decrypt_error_holds_the_key_or_the_plaintext(via: str) -> None:
    # Error trackers (Sentry, rich tracebacks) record the locals of every frame of the error and
    # of its causes and contexts: decrypting must leave neither the key nor the data there.
    def decrypt(data: str, iv: str, session_key: str, app_key: Any) -> object:
        if via == "function":
            return decrypt_user_data(data, iv, session_key, app_key)
        return SessionKey(openid="o", session_key=session_key).decrypt(data, iv, app_key)

    seen = set()
    for reason, data, iv, session_key, app_key in _reason_cases():
        with pytest.raises(DecryptError) as caught:
            decrypt(data, iv, session_key, app_key)
        assert caught.value.reason == reason
        seen.add(reason)
        frames = list(traceback_frames(caught.value))
        assert any(function == "decrypt_user_data" for _, function, _ in frames)
        for filename, function, local in frames:
            if filename == __file__:
                continue  # this test's own frame holds the arguments, of course
            for name, value in local.items():
                shown = repr(value)
                for secret in _secret_forms(session_key):
                    assert secret not in shown, (reason, function, name)
    reasons = "base64 key_size iv_size data_size padding length app_key json argument"
    assert seen == set(reasons.split())


def test_decrypt_error_shape() -> None:
    error = _decrypt_error(DATA, IV, SESSION_KEY, "wrong-app-key")
    assert isinstance(error, SwanAuthError)
    assert not isinstance(error, ValueError)
    assert error.kind == "decrypt"
    assert repr(error).startswith("DecryptError(")
    assert "reason=" in repr(error)
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), str(copy), copy.reason, copy.stale_key) == (
        DecryptError,
        str(error),
        error.reason,
        error.stale_key,
    )


# ------------------------------------------------------------------------------- fuzzing

_valid = {"data": DATA, "iv": IV, "session_key": SESSION_KEY, "app_key": APP_KEY}


def _mangled(text: str) -> st.SearchStrategy[str]:
    """Valid text with a slice cut out, a character replaced, or garbage appended."""
    return st.one_of(
        st.builds(
            lambda i, j: text[:i] + text[j:], st.integers(0, len(text)), st.integers(0, len(text))
        ),
        st.builds(
            lambda i, c: text[:i] + c + text[i + 1 :], st.integers(0, len(text)), st.characters()
        ),
        st.builds(lambda extra: text + extra, st.text(max_size=8)),
    )


def _argument(name: str) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.just(_valid[name]),
        _mangled(_valid[name]),
        st.text(max_size=60),
        st.binary(max_size=200).map(_b64),
        st.binary(max_size=200).map(lambda raw: base64.urlsafe_b64encode(raw).decode()),
        st.binary(max_size=40),
        st.none() | st.integers() | st.floats(allow_nan=True),
    )


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=_argument("data"),
    iv=_argument("iv"),
    session_key=_argument("session_key"),
    app_key=_argument("app_key"),
)
def test_any_four_arguments_give_a_dict_or_a_decrypt_error(
    data: Any, iv: Any, session_key: Any, app_key: Any
) -> None:
    try:
        result = decrypt_user_data(data, iv, session_key, app_key)
    except DecryptError as error:
        assert error.reason
        return
    assert isinstance(result, dict)


@settings(max_examples=300)
@given(
    flips=st.lists(st.tuples(st.integers(0, 159), st.integers(1, 255)), min_size=1, max_size=3),
    cut=st.integers(0, 160),
)
def test_altered_ciphertext_gives_a_dict_or_a_decrypt_error(
    flips: list[tuple[int, int]], cut: int
) -> None:
    raw = bytearray(base64.b64decode(DATA))
    for index, mask in flips:
        raw[index] ^= mask
    try:
        result = decrypt_user_data(_b64(bytes(raw[:cut])), IV, SESSION_KEY, APP_KEY)
    except DecryptError:
        return
    assert isinstance(result, dict)


def test_the_first_json_bytes_can_be_altered_undetected_as_documented() -> None:
    # docs/how-to/decrypting.md says the checks prove the key, not the data: CBC is malleable,
    # and the block before the JSON's first 12 bytes only feeds the random prefix.
    keys = Keys()
    payload = {"role": "user", "purePhoneNumber": PHONE}
    data = encrypt_user_data(payload, keys.iv_b64, keys.session_key, APP_KEY)
    raw = bytearray(base64.b64decode(data))
    known, wanted = b'{"role":"use', b'{"role":"adm'
    for index, (before, after) in enumerate(zip(known, wanted, strict=True)):
        raw[4 + index] ^= before ^ after  # plaintext byte 20 + index, through ciphertext block 0
    assert keys.decrypt(_b64(bytes(raw))) == {"role": "admr", "purePhoneNumber": PHONE}


# ------------------------------------------------------------------------------- swanid


def test_swanid_signature_known_answer() -> None:
    expected = hashlib.md5(b"appkey=my-appsecret_key=my-secretswanid=device-123").hexdigest()
    assert swanid_signature("my-app", "my-secret", "device-123") == expected
    assert len(expected) == 32


def test_swanid_signature_of_non_ascii_hashes_utf8() -> None:
    expected = hashlib.md5("appkey=asecret_key=sswanid=设备".encode()).hexdigest()
    assert swanid_signature("a", "s", "设备") == expected


def test_verify_swanid_signature() -> None:
    signature = swanid_signature("my-app", "my-secret", "device-123")
    assert verify_swanid_signature("my-app", "my-secret", "device-123", signature)
    assert verify_swanid_signature("my-app", "my-secret", "device-123", signature.upper())
    assert not verify_swanid_signature("my-app", "my-secret", "device-124", signature)
    assert not verify_swanid_signature("my-app", "other-secret", "device-123", signature)
    assert not verify_swanid_signature("my-app", "my-secret", "device-123", signature[:-1])
    assert not verify_swanid_signature("my-app", "my-secret", "device-123", signature + "0")
    assert not verify_swanid_signature("my-app", "my-secret", "device-123", "")
    assert not verify_swanid_signature("my-app", "my-secret", "device-123", "é" * 32)


@pytest.mark.parametrize("bad", [None, 42, b"device-123", "dev\ud800ice"])
def test_verify_swanid_signature_with_unusable_client_values_is_false(bad: Any) -> None:
    signature = swanid_signature("my-app", "my-secret", "device-123")
    assert not verify_swanid_signature("my-app", "my-secret", bad, signature)
    assert not verify_swanid_signature("my-app", "my-secret", "device-123", bad)


@pytest.mark.parametrize(
    "arguments",
    [
        ("", "my-secret", "device"),
        ("my-app", "", "device"),
        (None, "my-secret", "device"),
        ("my-app", b"my-secret", "device"),
        ("my-app", "my-\ud800secret", "device"),
        ("my-app", "my-secret", None),
        ("my-app", "my-secret", "dev\ud800ice"),
    ],
)
def test_swanid_signature_rejects_unusable_arguments(arguments: tuple[Any, Any, Any]) -> None:
    with pytest.raises(InvalidInputError) as caught:
        swanid_signature(*arguments)
    assert "my-secret" not in str(caught.value)
    assert caught.value.__context__ is None


@pytest.mark.parametrize(
    "call",
    [
        lambda secret: swanid_signature("", secret, "device"),
        lambda secret: swanid_signature("my-app", secret, None),
        lambda secret: swanid_signature("my-app", secret, "dev\ud800ice"),
        lambda secret: verify_swanid_signature("", secret, "device", "0" * 32),
        lambda secret: verify_swanid_signature(None, secret, "device", "0" * 32),
    ],
    ids=["empty-app-key", "swanid-none", "swanid-surrogate", "verify-empty", "verify-none"],
)
def test_no_frame_of_a_swanid_error_holds_the_app_secret(call: Any) -> None:
    secret = "app-secret-" + os.urandom(8).hex()
    with pytest.raises(InvalidInputError) as caught:
        call(secret)
    ours = [frame for frame in traceback_frames(caught.value) if frame[0] != __file__]
    assert ours, "the SDK's frames are in the traceback"
    for _, function, local in ours:
        for name, value in local.items():
            assert secret not in repr(value), (function, name)


def test_verify_swanid_signature_rejects_bad_settings() -> None:
    with pytest.raises(InvalidInputError):
        verify_swanid_signature("my-app", "", "device", "0" * 32)


# ------------------------------------------------------------------------------- the fake


async def test_decrypting_data_from_the_fake_after_a_real_exchange(
    fake: FakeBaiduServer, client: SwanAuthClient
) -> None:
    code = fake.issue_code(openid="user-1")
    key = await client.exchange(code)
    data, iv = fake.encrypt_for(code, {"openid": "user-1", "nickname": "小度"})
    assert key.decrypt(data, iv, fake.client_id) == {"openid": "user-1", "nickname": "小度"}

    # The user logs in again: a new session key, and the old data no longer decrypts with it.
    newer = await client.exchange(fake.issue_code(openid="user-1"))
    with pytest.raises(DecryptError) as caught:
        newer.decrypt(data, iv, fake.client_id)
    assert caught.value.stale_key


def test_the_fake_encrypts_for_another_app_key() -> None:
    fake = FakeBaiduServer()
    code = fake.issue_code()
    data, iv = fake.encrypt_for(code, {"a": 1}, app_key="other-app")
    with pytest.raises(DecryptError):
        decrypt_user_data(data, iv, fake.grant_for(code).session_key, fake.client_id)
    assert decrypt_user_data(data, iv, fake.grant_for(code).session_key, "other-app") == {"a": 1}


# ------------------------------------------------------------------------------- the extra


def test_every_new_name_is_exported() -> None:
    for name in (
        "DecryptError",
        "MissingDependencyError",
        "decrypt_user_data",
        "swanid_signature",
        "verify_swanid_signature",
    ):
        assert name in baidu_swan_auth.__all__


def test_without_cryptography_decryption_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    # None in sys.modules makes any import of the name fail, as when it is not installed.
    for name in [name for name in sys.modules if name.split(".")[0] == "cryptography"]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "cryptography", None)
    key = SessionKey(openid="o", session_key=SESSION_KEY)
    for call in (
        lambda: decrypt_user_data(DATA, IV, SESSION_KEY, APP_KEY),
        lambda: decrypt_user_data(None, None, None, None),  # the missing extra comes first
        lambda: key.decrypt(DATA, IV, APP_KEY),
        lambda: encrypt_user_data({}, IV, SESSION_KEY, APP_KEY),
    ):
        with pytest.raises(MissingDependencyError) as caught:
            call()
        assert "pip install 'baidu-swan-auth[crypto]'" in str(caught.value)
        assert caught.value.package == "cryptography"
        assert isinstance(caught.value, ImportError)
        assert caught.value.kind == "missing_dependency"
    # The signature needs nothing extra.
    assert len(swanid_signature("a", "s", "i")) == 32


def test_require_cryptography_checks_for_the_extra_up_front(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    require_cryptography()  # installed here: nothing to say
    for name in [name for name in sys.modules if name.split(".")[0] == "cryptography"]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "cryptography", None)
    for call, doing in (
        (require_cryptography, "decrypting"),
        (lambda: require_cryptography("encrypting"), "encrypting"),
    ):
        with pytest.raises(MissingDependencyError) as caught:
            call()
        assert str(caught.value).startswith(f"{doing} user data needs the 'cryptography' package")
        assert "pip install 'baidu-swan-auth[crypto]'" in str(caught.value)
        assert caught.value.package == "cryptography"


def test_without_cryptography_no_frame_holds_the_session_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in [name for name in sys.modules if name.split(".")[0] == "cryptography"]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "cryptography", None)
    session_key = _b64(os.urandom(24))
    with pytest.raises(MissingDependencyError) as caught:
        decrypt_user_data(DATA, IV, session_key, APP_KEY)
    ours = [frame for frame in traceback_frames(caught.value) if frame[0] != __file__]
    assert any(function == "decrypt_user_data" for _, function, _ in ours)
    for _, function, local in ours:
        for name, value in local.items():
            assert session_key not in repr(value), (function, name)


def test_a_fresh_interpreter_without_cryptography() -> None:
    script = textwrap.dedent(
        """
        import sys
        sys.modules["cryptography"] = None  # as if the crypto extra were not installed

        import baidu_swan_auth
        import baidu_swan_auth.crypto
        import baidu_swan_auth.testing
        from baidu_swan_auth import MissingDependencyError, decrypt_user_data

        try:
            decrypt_user_data("", "", "", "app")
        except MissingDependencyError as error:
            print("raised:", error)
        print("signature:", baidu_swan_auth.swanid_signature("a", "s", "i"))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "raised: " in result.stdout
    assert "pip install 'baidu-swan-auth[crypto]'" in result.stdout
    assert "signature: " in result.stdout


def test_importing_the_package_does_not_import_cryptography() -> None:
    script = (
        "import sys, baidu_swan_auth, baidu_swan_auth.testing; print('cryptography' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "False"
