"""The work of ``baidu_swan_auth.crypto``: user-data decryption and ``swanid`` signatures.

Private, and below every other module but ``_errors``: the values (``SessionKey.decrypt`` in
``_models``) import it without importing a public feature module. ``baidu_swan_auth.crypto`` is
the public face; it re-exports the names in ``__all__``, which report it as their module. Read
its docstring for Baidu's scheme.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, NoReturn

from ._errors import DecryptError, InvalidInputError, MissingDependencyError

__all__ = [
    "decrypt_user_data",
    "require_cryptography",
    "swanid_signature",
    "verify_swanid_signature",
]

KEY_SIZE = 24  # AES-192
IV_SIZE = 16
BLOCK_SIZE = 16
PAD_BLOCK = 32  # Baidu pads to 32 bytes, so pad counts run from 1 to 32
PREFIX_SIZE = 16
LENGTH_SIZE = 4
INSTALL_HINT = "pip install 'baidu-swan-auth[crypto]'"

_STALE = (
    "the session key is probably stale (every swan.login() may renew it): ask the mini program "
    "to call swan.login() again, exchange the new code, and send the data again"
)
# MIME-style line wrapping is harmless; a space is not (see _b64decode).
_IGNORED_WHITESPACE = str.maketrans("", "", "\t\n\r\v\f")
_URLSAFE_TO_STANDARD = str.maketrans("-_", "+/")


# cryptography is imported inside functions, never at module level, so that the package (and
# this module) import without the crypto extra.


def require_cryptography(doing: str = "decrypting") -> None:
    """Check that the ``cryptography`` package (the ``crypto`` extra) is installed.

    Call it before doing anything that needs AES, so that a missing extra fails with an error
    that says how to install it, not with an ``ImportError`` halfway through. It imports the
    cipher module once; later calls cost a dictionary lookup.

    Args:
        doing: What needs the package, as the message's first word: ``"decrypting"`` (the
            default) or ``"encrypting"`` gives "decrypting user data needs the 'cryptography'
            package: ...".

    Raises:
        MissingDependencyError: The ``cryptography`` package is not installed; its ``package``
            is ``"cryptography"`` and its message carries the ``pip install`` command.
    """
    try:
        import cryptography.hazmat.primitives.ciphers  # noqa: F401, PLC0415
    except ImportError as error:
        raise MissingDependencyError(
            f"{doing} user data needs the 'cryptography' package: {INSTALL_HINT}",
            package="cryptography",
        ) from error


def _aes_cbc_decrypt(key: bytes, iv: bytes, ciphertext: bytes) -> bytes:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes  # noqa: PLC0415

    decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    return decryptor.update(ciphertext) + decryptor.finalize()


class _Rejected(Exception):
    """A failure on its way out to the public function, which raises the public error itself
    (see ``decrypt_user_data`` for why): this one never leaves the module."""

    def __init__(self, message: str, reason: str = "argument") -> None:
        super().__init__(message, reason)
        self.message = message
        self.reason = reason


def _fail(message: str, reason: str) -> NoReturn:
    raise _Rejected(message, reason)


def _b64decode(value: object, name: str) -> bytes:
    """Decode standard base64 as mini programs send it, forgiving only harmless variations.

    Accepted: surrounding whitespace, line breaks anywhere, missing ``=`` padding, and the
    URL-safe alphabet (``-``/``_``) instead of the standard one. Rejected: anything else, spaces
    inside included, because a space is what form decoding makes of a ``+``.
    """
    if not isinstance(value, str):
        hint = " (pass key.session_key, or call key.decrypt())" if name == "session_key" else ""
        _fail(f"{name} must be a str of base64 text, not {type(value).__name__}{hint}", "argument")
    text = value.strip(" \t\n\r\v\f").translate(_IGNORED_WHITESPACE)
    if " " in text:
        _fail(
            f"{name} contains a space, which base64 never does: a '+' was probably turned into a "
            "space by form or query-string decoding on its way to your server",
            "base64",
        )
    if not text.isascii():
        _fail(f"{name} is not valid base64: it contains non-ASCII characters", "base64")
    if any(c in text for c in "-_"):
        if any(c in text for c in "+/"):
            _fail(
                f"{name} is not valid base64: it mixes the standard and URL-safe alphabets",
                "base64",
            )
        text = text.translate(_URLSAFE_TO_STANDARD)
    if not text.endswith("="):
        text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        pass
    # Raised outside the except block: nothing to chain that a reader needs.
    _fail(f"{name} is not valid base64", "base64")


def _app_key_bytes(app_key: object) -> bytes:
    if not isinstance(app_key, str):
        _fail(f"app_key must be a str, not {type(app_key).__name__}", "argument")
    if not app_key:
        _fail("app_key is empty: pass the mini program's AppKey (client_id)", "argument")
    try:
        return app_key.encode("utf-8")
    except UnicodeEncodeError:
        pass
    _fail("app_key is not valid Unicode (it holds a lone surrogate)", "argument")


_NOT_JSON = object()


def _reject_constant(name: str) -> NoReturn:
    # NaN and Infinity are Python's extensions, not JSON.
    raise ValueError(f"{name} is not JSON")


def _parse_json(raw: bytes) -> dict[str, Any]:
    # Every failure is raised outside its except block: the decode and JSON errors would chain
    # the plaintext (UnicodeDecodeError.object, JSONDecodeError.doc) to the failure.
    try:
        text: str | None = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None:
        _fail("the decrypted payload is not UTF-8 text", "json")
    try:
        payload: object = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        payload = _NOT_JSON
    if payload is _NOT_JSON:
        _fail("the decrypted payload is not JSON", "json")
    if not isinstance(payload, dict):
        _fail(f"the decrypted payload is a JSON {type(payload).__name__}, not an object", "json")
    return payload


def decrypt_user_data(data: str, iv: str, session_key: str, app_key: str) -> dict[str, Any]:
    """Decrypt what ``swan.getUserInfo``, ``getPhoneNumber`` and friends gave the mini program.

    The three base64 arguments may come with surrounding whitespace, line breaks, missing ``=``
    padding or in the URL-safe alphabet; anything else that is not base64 (a space inside
    included: it means a ``+`` was lost to form decoding) is rejected.

    The padding, length and AppKey checks catch a stale or wrong session key, nearly always.
    They do not prove integrity: there is no MAC, and whoever can alter ``data`` (the user, for
    one) can alter parts of the plaintext without the key (AES-CBC is malleable). Do not base
    authorization decisions on decrypted fields; see the decrypting guide.

    Args:
        data: The encrypted data (``encryptedData`` / ``data``) as the mini program received it:
            base64 text.
        iv: The ``iv`` that came with it: base64 of 16 bytes.
        session_key: The user's current session key, as
            [`exchange`][baidu_swan_auth.SwanAuthClient.exchange] returned it: base64 of 24
            bytes. Never send it to the mini program.
        app_key: The mini program's AppKey (the ``client_id``). The data ends with the AppKey
            it was encrypted for, and decryption fails unless the two match.

    Returns:
        The decrypted JSON object.

    Raises:
        DecryptError: For every input that does not decrypt to Baidu's layout: a non-str
            argument, bad base64, a key that is not 24 bytes, an IV that is not 16, data that is
            empty or not whole 16-byte blocks, bad padding, a length field that does not fit, an
            AppKey that does not match, a payload that is not a JSON object. Its ``reason`` says
            which; ``stale_key`` is true for the failures a stale session key causes.
        MissingDependencyError: The ``cryptography`` package is not installed.
    """
    try:
        require_cryptography()  # first, so that a missing extra never hides behind a bad input
        return _decrypt(data, iv, session_key, app_key)
    except _Rejected as rejected:
        message, reason = rejected.message, rejected.reason
    finally:
        # Error trackers record the locals of every frame in a traceback, and this frame is in
        # the traceback of whatever leaves it: the session key goes before anything does.
        del data, iv, session_key, app_key
    # Raised here, after the except block, so that the _Rejected is neither the cause nor the
    # context: its traceback holds the frames that saw the key and the plaintext.
    raise DecryptError(message, reason=reason) from None


def _decrypt(data: object, iv: object, session_key: object, app_key: object) -> dict[str, Any]:
    """The work of ``decrypt_user_data``. Fails with ``_Rejected``, which must not escape."""
    ciphertext = _b64decode(data, "data")
    iv_bytes = _b64decode(iv, "iv")
    key = _b64decode(session_key, "session_key")
    expected_app_key = _app_key_bytes(app_key)
    if len(key) != KEY_SIZE:
        _fail(
            f"session_key decodes to {len(key)} bytes; a Baidu session key is {KEY_SIZE} bytes "
            "(32 base64 characters)",
            "key_size",
        )
    if len(iv_bytes) != IV_SIZE:
        _fail(f"iv decodes to {len(iv_bytes)} bytes, not {IV_SIZE}", "iv_size")
    if not ciphertext or len(ciphertext) % BLOCK_SIZE:
        _fail(
            f"data decodes to {len(ciphertext)} bytes, not a positive multiple of {BLOCK_SIZE}: "
            "it was truncated or is not Baidu's encrypted data",
            "data_size",
        )

    plaintext = _aes_cbc_decrypt(key, iv_bytes, ciphertext)

    # With a wrong key the plaintext is random bytes, so it almost always fails here or at the
    # length field, long before the AppKey check: these messages carry the stale-key hint too.
    pad = plaintext[-1]
    if not 1 <= pad <= PAD_BLOCK or pad > len(plaintext):
        _fail(f"the decrypted data has an invalid padding byte; {_STALE}", "padding")
    if plaintext[-pad:] != bytes([pad]) * pad:
        _fail(f"the decrypted data has inconsistent padding; {_STALE}", "padding")
    body = plaintext[:-pad]
    start = PREFIX_SIZE + LENGTH_SIZE
    if len(body) < start:
        _fail(f"the decrypted data is too short for its layout; {_STALE}", "length")
    length = int.from_bytes(body[PREFIX_SIZE:start], "big")
    if start + length > len(body):
        _fail(f"the decrypted data's length field does not fit; {_STALE}", "length")
    trailer = body[start + length :]
    if not _same_bytes(trailer, expected_app_key):
        if not _is_json_object(body[start : start + length]):
            # Random bytes whose length field happened to fit: a wrong key, not another AppKey.
            _fail(f"the decrypted data's length field does not fit; {_STALE}", "length")
        # The padding, the length field and the JSON all fit: what follows is the AppKey the
        # data was made for, so this is a mismatch, whatever its length (an AppID passed as
        # app_key has another length than any AppKey).
        _fail(
            f"the decrypted data ends with another AppKey ({len(trailer)} bytes; app_key has "
            f"{len(expected_app_key)}): app_key is not the AppKey of the mini program that "
            "received the data (the session key is right: the data decrypted to valid JSON)",
            "app_key",
        )
    return _parse_json(body[start : start + length])


def _is_json_object(raw: bytes) -> bool:
    try:
        return isinstance(json.loads(raw.decode("utf-8")), dict)
    except (ValueError, RecursionError):
        return False


def swanid_signature(app_key: str, secret: str, swanid: str) -> str:
    """Compute the ``swanid_signature`` Baidu gives alongside a ``swanid``.

    ``swan.getSwanId()`` returns a ``swanid`` (a per-device id, not a login) and its signature:
    the lowercase hex MD5 of ``"appkey=%ssecret_key=%sswanid=%s"`` over UTF-8
    (``userinfo_signature.md``).

    Args:
        app_key: The mini program's AppKey (the ``client_id``).
        secret: The mini program's AppSecret. Stays out of every message.
        swanid: The ``swanid`` the mini program received.

    Returns:
        32 lowercase hex digits.

    Raises:
        InvalidInputError: An argument is not a str or holds a lone surrogate, or the AppKey or
            AppSecret is empty.
    """
    try:
        return _md5_hex(_settings_material(app_key, secret) + _swanid_bytes(swanid))
    except _Rejected as rejected:
        message = rejected.message
    finally:
        del secret  # see decrypt_user_data: this frame is in the error's traceback
    raise InvalidInputError(message) from None


def verify_swanid_signature(app_key: str, secret: str, swanid: str, signature: str) -> bool:
    """Tell whether ``signature`` is the ``swanid_signature`` of ``swanid``.

    The comparison takes constant time and ignores the case of the hex digits. ``swanid`` and
    ``signature`` come from the client, so unusable values there (not a str, not valid Unicode)
    give ``False`` rather than an error.

    Args:
        app_key: The mini program's AppKey (the ``client_id``).
        secret: The mini program's AppSecret.
        swanid: The ``swanid`` the mini program sent.
        signature: The ``swanid_signature`` the mini program sent.

    Returns:
        True when the signature matches.

    Raises:
        InvalidInputError: ``app_key`` or ``secret`` is not a non-empty str of valid Unicode.
    """
    try:
        material = _settings_material(app_key, secret)
    except _Rejected as rejected:
        message = rejected.message
    else:
        return _signature_matches(material, swanid, signature)
    finally:
        del secret  # see decrypt_user_data: this frame is in the error's traceback
    raise InvalidInputError(message) from None


def _signature_matches(material: bytes, swanid: object, signature: object) -> bool:
    swanid_bytes = _utf8(swanid)
    if swanid_bytes is None or not isinstance(signature, str) or not signature.isascii():
        return False
    expected = _md5_hex(material + swanid_bytes).encode("ascii")
    return _same_bytes(expected, signature.lower().encode("ascii"))


def _swanid_bytes(swanid: object) -> bytes:
    encoded = _utf8(swanid)
    if encoded is None:
        raise _Rejected("swanid must be a str of valid Unicode")
    return encoded


def _utf8(value: object) -> bytes | None:
    if not isinstance(value, str):
        return None
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        # Returned, not raised: the error's .object would carry the whole string (a secret).
        return None


def _settings_material(app_key: object, secret: object) -> bytes:
    """``appkey=...secret_key=...swanid=``, ready for the swanid to be appended."""
    parts = []
    for name, value in (("app_key", app_key), ("secret", secret)):
        encoded = _utf8(value)
        if not encoded:
            raise _Rejected(f"{name} must be a non-empty str of valid Unicode")
        parts.append(encoded)
    return b"appkey=" + parts[0] + b"secret_key=" + parts[1] + b"swanid="


def _md5_hex(material: bytes) -> str:
    # MD5 is what Baidu mandates for this signature, not a choice of ours.
    import hashlib  # noqa: PLC0415 (see _same_bytes)

    return hashlib.md5(material).hexdigest()  # noqa: S324


def _same_bytes(left: bytes, right: bytes) -> bool:
    """Compare in constant time. hmac (and hashlib, which it loads) are imported here, not with
    the module: ``import baidu_swan_auth`` would pay about 2 ms for them, for every process, and
    only decryption and swanid checks need them."""
    import hmac  # noqa: PLC0415

    return hmac.compare_digest(left, right)
