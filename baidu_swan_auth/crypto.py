"""Decrypt the user data a mini program receives, and check ``swanid`` signatures.

``swan.getUserInfo``, the ``getPhoneNumber`` button and friends hand the mini program an
encrypted ``data`` and an ``iv``. Only the server can read them, with the session key it got from
[`SwanAuthClient.exchange`][baidu_swan_auth.SwanAuthClient.exchange]:

```python
user = key.decrypt(data, iv, app_key)  # or decrypt_user_data(data, iv, key.session_key, app_key)
```

Decryption needs the ``crypto`` extra: ``pip install 'baidu-swan-auth[crypto]'``. This module
imports without it; calling [`decrypt_user_data`][baidu_swan_auth.decrypt_user_data] without it
raises [`MissingDependencyError`][baidu_swan_auth.MissingDependencyError], and so does
[`require_cryptography`][baidu_swan_auth.crypto.require_cryptography], which checks for the extra
up front. The ``swanid`` signature functions need nothing extra.

Baidu's scheme (``log_userdata.md``): AES-192-CBC, key = the base64-decoded session key (24
bytes), IV = the base64-decoded ``iv`` (16 bytes). The plaintext is 16 random bytes, a 4-byte
big-endian length ``L``, ``L`` bytes of UTF-8 JSON, then the mini program's AppKey, padded
PKCS#7-style to a multiple of **32** bytes (a pad count from 1 to 32). There is no MAC: the
padding, the length field and the trailing AppKey are the only checks, so every one of them is
verified. They catch a wrong key; they cannot catch an altered ciphertext (CBC is malleable).
"""

from __future__ import annotations

from ._crypto import (
    decrypt_user_data,
    require_cryptography,
    swanid_signature,
    verify_swanid_signature,
)

__all__ = [
    "decrypt_user_data",
    "require_cryptography",
    "swanid_signature",
    "verify_swanid_signature",
]

# The work is done in the private `_crypto`, which the values in `_models` import without
# importing this feature module. Its public names report this module, which exports them, as
# the package's do (see `baidu_swan_auth/__init__.py`): pickle and `typing.get_type_hints` look
# a name up in the module its `__module__` names.
for _name in __all__:
    _value = globals()[_name]
    if _value.__module__.startswith("baidu_swan_auth._"):
        _value.__module__ = __name__
del _name, _value
