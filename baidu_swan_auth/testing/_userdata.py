"""Encrypt user data as Baidu does: the inverse of ``baidu_swan_auth.crypto``, for tests.

The sizes of Baidu's layout are restated here rather than imported: they are not part of
``crypto``'s public face, and an encryption written independently of the decryption it tests
makes a better witness.
"""

from __future__ import annotations

import base64
import json
import secrets
import struct
from collections.abc import Callable, Mapping
from typing import Any

from ..crypto import require_cryptography

__all__ = ["encrypt_user_data"]

# Baidu's layout (see ``baidu_swan_auth.crypto``): AES-192-CBC with a 16-byte IV; the plaintext
# is 16 random bytes, a 4-byte big-endian length, the payload and the AppKey, padded PKCS#7-style
# to a multiple of 32 bytes.
KEY_SIZE = 24
IV_SIZE = 16
BLOCK_SIZE = 16
PAD_BLOCK = 32
PREFIX_SIZE = 16


def encrypt_user_data(
    payload: Mapping[str, Any] | bytes,
    iv: str,
    session_key: str,
    app_key: str,
    *,
    random: Callable[[int], bytes] = secrets.token_bytes,
    padding: int | None = None,
) -> str:
    """Encrypt user data the way Baidu does for ``swan.getUserInfo`` and friends.

    The inverse of [`decrypt_user_data`][baidu_swan_auth.decrypt_user_data], for tests: a
    production server only ever decrypts. It lives here rather than in ``baidu_swan_auth.crypto``
    for that reason. With Baidu's 16 random bytes fixed through ``random``, it reproduces Baidu's
    ciphertext byte for byte. Needs the ``crypto`` extra.

    Args:
        payload: A JSON object, encoded compactly as UTF-8 (non-ASCII kept as is), or the exact
            payload bytes, which need not be JSON (to test how your code handles bad data).
        iv: Base64 of 16 bytes.
        session_key: Base64 of 24 bytes, e.g. a [`Grant`][baidu_swan_auth.testing.Grant]'s.
        app_key: The AppKey appended after the payload.
        random: Returns ``n`` random bytes: the source of the 16-byte random prefix.
        padding: The pad count, from 1 to 32, such that the padded length is a multiple of 16.
            ``None``: Baidu's padding, to a multiple of 32.

    Returns:
        The encrypted data, standard base64, as the mini program receives it.

    Raises:
        ValueError: The key or IV has the wrong size, or ``padding`` does not fit.
        MissingDependencyError: The ``cryptography`` package is not installed.
    """
    require_cryptography("encrypting")
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes  # noqa: PLC0415

    key = base64.b64decode(session_key, validate=True)
    iv_bytes = base64.b64decode(iv, validate=True)
    if len(key) != KEY_SIZE or len(iv_bytes) != IV_SIZE:
        raise ValueError("the session key must be 24 bytes and the IV 16 bytes")
    if isinstance(payload, bytes):
        body = payload
    else:
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    prefix = random(PREFIX_SIZE)
    if len(prefix) != PREFIX_SIZE:
        raise ValueError("random(16) must return 16 bytes")
    plain = prefix + struct.pack(">I", len(body)) + body + app_key.encode("utf-8")
    if padding is None:
        padding = PAD_BLOCK - len(plain) % PAD_BLOCK
    if not 1 <= padding <= PAD_BLOCK or (len(plain) + padding) % BLOCK_SIZE:
        raise ValueError(f"padding={padding} does not make whole 16-byte blocks here")
    plain += bytes([padding]) * padding
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv_bytes)).encryptor()
    return base64.b64encode(encryptor.update(plain) + encryptor.finalize()).decode("ascii")
