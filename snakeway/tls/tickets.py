"""One set of TLS session ticket keys for every worker, so a returning client resumes whichever worker it reaches.

A client that resumes a session skips the certificate and the key exchange's signature: an abbreviated
handshake. It presents a *ticket*, sealed with the server's ticket key. OpenSSL makes a random key per
``SSL_CTX``, so with several workers (each its own process, the kernel choosing one per connection) a ticket
sealed by one worker means nothing to the others, and most reconnections would do a full handshake. nginx
shares its workers' keys by making them in the master before it forks; snakeway does the same: :data:`_KEYS`
is made when this module is imported, which the supervisor does before forking (``cli`` imports the server
first), and each worker installs the same keys in every context it builds. They live only in memory and
change when snakeway restarts, as nginx's do without ``ssl_session_ticket_key``.

Python's :mod:`ssl` has no call for ticket keys, so :func:`share_ticket_keys` calls OpenSSL's
``SSL_CTX_set_tlsext_ticket_keys`` through :mod:`ctypes`, in the very library the ``_ssl`` module uses, on the
``SSL_CTX`` pointer that CPython keeps right after the object header of an ``SSLContext`` (the layout of every
CPython 3 version). Before writing, it checks that the pointer is right (OpenSSL's view of the context's
options must equal Python's) and afterwards it reads the keys back. Anything unexpected, and the contexts keep
OpenSSL's own per-process keys: sessions still resume within a worker, and a line in the log says so.
"""

from __future__ import annotations

import ctypes
import logging
import os
import ssl
import sys
from typing import Any

logger = logging.getLogger(__name__)

# SSL_CTX_ctrl commands behind the SSL_CTX_{set,get}_tlsext_ticket_keys macros (openssl/tls1.h).
_SET_TICKET_KEYS = 59
_GET_TICKET_KEYS = 58
# 16 bytes of key name, 32 of HMAC secret, 32 of AES key.
KEY_BYTES = 80
_KEYS = os.urandom(KEY_BYTES)


class _OpenSSL:
    def __init__(self) -> None:
        import _ssl  # the extension module: its libssl is the one every SSLContext lives in

        lib = ctypes.CDLL(_ssl.__file__)
        self.ctrl = lib.SSL_CTX_ctrl
        self.ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
        self.ctrl.restype = ctypes.c_long
        self.get_options = lib.SSL_CTX_get_options
        self.get_options.argtypes = [ctypes.c_void_p]
        self.get_options.restype = ctypes.c_uint64


_api: _OpenSSL | None = None
_unavailable: str | None = None


def _openssl() -> _OpenSSL | None:
    global _api, _unavailable
    if _api is None and _unavailable is None:
        if sys.implementation.name != "cpython":
            _unavailable = f"not on CPython ({sys.implementation.name})"
        else:
            try:
                _api = _OpenSSL()
            except (OSError, AttributeError) as exc:
                _unavailable = f"OpenSSL's functions are out of reach ({exc})"
        if _unavailable is not None:
            logger.warning("TLS session tickets are per worker process: %s", _unavailable)
    return _api


def share_ticket_keys(context: ssl.SSLContext) -> bool:
    """Install the process tree's ticket keys in ``context``; False (and the context untouched) if that fails."""
    global _api, _unavailable
    api = _openssl()
    if api is None:
        return False
    pointer: Any = ctypes.c_void_p.from_address(id(context) + object.__basicsize__).value
    if not pointer or api.get_options(pointer) != int(context.options):
        _unavailable = "the SSLContext's layout is not the one expected"
        logger.warning("TLS session tickets are per worker process: %s", _unavailable)
        _api = None
        return False
    keys = ctypes.create_string_buffer(_KEYS, KEY_BYTES)
    read_back = ctypes.create_string_buffer(KEY_BYTES)
    if api.ctrl(pointer, _SET_TICKET_KEYS, KEY_BYTES, keys) != 1 or (
        api.ctrl(pointer, _GET_TICKET_KEYS, KEY_BYTES, read_back) != 1 or read_back.raw != _KEYS
    ):
        logger.warning("TLS session tickets are per worker process: OpenSSL refused the shared keys")
        return False
    return True
