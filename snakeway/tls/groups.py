"""Key-exchange groups of snakeway's server contexts: X25519MLKEM768 where OpenSSL has it, X25519 and P-256.

Theory of operation
-------------------
OpenSSL's default list of groups also offers P-384, P-521, X448 and the finite-field groups (ffdhe2048 and up).
None of them adds security a client needs, and the finite-field ones make the server do a costly modular
exponentiation for any client that asks for them. Like Caddy, snakeway accepts only the post-quantum hybrid
X25519MLKEM768 (OpenSSL 3.5 and later), X25519 and P-256, in that order of preference. The list applies to TLS
1.3 key shares and to TLS 1.2 ECDHE alike. A client that supports none of them fails the handshake with a
``handshake_failure`` alert; every browser and TLS library of the last decade has X25519 or P-256.

Python 3.15 has ``SSLContext.set_groups``; older versions only have ``set_ecdh_curve``, which allows a single
curve. There, snakeway calls OpenSSL itself, through :mod:`ctypes`, on the ``SSL_CTX`` of the stdlib context:

1. Only on CPython 3.11 to 3.14 (:data:`KNOWN_LAYOUTS`), whose ``PySSLContext`` struct is known:
   ``PyObject_HEAD`` followed by ``SSL_CTX *ctx``. Nothing can tell from outside whether some other build lays
   the struct out the same way: the check in step 4 makes OpenSSL dereference the pointer it is given, so a
   pointer read from a different layout would crash the process (a segmentation fault), not fail the check.
   Any other interpreter, or a later CPython without ``set_groups``, keeps OpenSSL's defaults.
2. The library is the one the ``_ssl`` extension module is linked against: ``dlopen`` of that module's file,
   whose symbol lookup also searches the libraries it depends on. Its ``OpenSSL_version_num()`` must equal
   :data:`ssl.OPENSSL_VERSION_NUMBER`, so this is the very library Python uses.
3. The pointer is read at ``id(context) + object.__basicsize__``, the size of the object header of this very
   interpreter build (larger in a debug build).
4. Before anything is changed, the pointer is checked: OpenSSL's ``SSL_CTX_get_options`` and minimum protocol
   version read through it must equal what Python reports for the same context (``context.options`` and
   ``context.minimum_version``, set to snakeway's values by then). This confirms, on a known layout, that the
   ``SSL_CTX`` is the context's and the library the one that made it; it is no defence against a wrong layout,
   which step 1 rules out.
5. ``SSL_CTX_set1_groups_list`` is a macro over ``SSL_CTX_ctrl(ctx, SSL_CTRL_SET_GROUPS_LIST, 0, list)``. When
   OpenSSL refuses a list (an unknown group), its error queue is cleared at once, so that no stale error is
   later reported by an unrelated call of the ``ssl`` module.

Which list the library takes (with or without X25519MLKEM768) is found once per process on a throw-away context.
When none of this is possible (another Python implementation or version, OpenSSL linked statically into
``_ssl``, a version mismatch, a failed check), snakeway logs one warning and keeps OpenSSL's default groups: TLS
works as before, only the group list is wider.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import platform
import ssl
import sys
from dataclasses import dataclass

logger = logging.getLogger(__name__)

#: The groups snakeway accepts, most preferred first; the first list OpenSSL takes is used.
GROUP_LISTS = ("X25519MLKEM768:X25519:P-256", "X25519:P-256")
# From OpenSSL's ssl.h: the command behind SSL_CTX_set1_groups_list, and behind SSL_CTX_get_min_proto_version.
SSL_CTRL_SET_GROUPS_LIST = 92
SSL_CTRL_GET_MIN_PROTO_VERSION = 130
#: The CPython versions (first and last) whose ``PySSLContext`` starts with the ``SSL_CTX *`` after the object
#: header; later ones have ``SSLContext.set_groups``.
KNOWN_LAYOUTS = ((3, 11), (3, 14))


def restrict_groups(context: ssl.SSLContext) -> str | None:
    """Limit ``context``'s key-exchange groups to the first of :data:`GROUP_LISTS` this OpenSSL supports.

    Call it once the context's options and minimum version are set (they are how the ``SSL_CTX`` pointer is
    checked, see the module docstring), before the context is used.

    Returns:
        The list applied (``"X25519:P-256"`` on OpenSSL 3.0), or ``None`` when the groups cannot be set on this
        Python; that was logged once, and the context keeps OpenSSL's defaults.
    """
    setter = _setter()
    if setter is None:
        return None
    if not setter.apply(context):
        logger.warning("key-exchange groups: OpenSSL refused %s on a context; its defaults stay", setter.groups)
        return None
    return setter.groups


@dataclass(frozen=True)
class _Stdlib:
    """``SSLContext.set_groups`` (Python 3.15 and later)."""

    groups: str

    def apply(self, context: ssl.SSLContext) -> bool:
        try:
            context.set_groups(self.groups)  # type: ignore[attr-defined]  # Python 3.15 and later
        except ssl.SSLError:
            return False
        return True


@dataclass(frozen=True)
class _LibSsl:
    """OpenSSL's own calls on the ``SSL_CTX`` of a stdlib context (see the module docstring)."""

    lib: ctypes.CDLL
    groups: str = ""

    def ctx_pointer(self, context: ssl.SSLContext) -> int | None:
        """The context's ``SSL_CTX *``, or None unless OpenSSL reads the context's settings through it.

        Only for an interpreter in :data:`KNOWN_LAYOUTS`: OpenSSL dereferences what is read here.
        """
        pointer = ctypes.c_void_p.from_address(id(context) + object.__basicsize__).value
        if not pointer:
            return None
        options = self.lib.SSL_CTX_get_options(ctypes.c_void_p(pointer))
        minimum = self.lib.SSL_CTX_ctrl(ctypes.c_void_p(pointer), SSL_CTRL_GET_MIN_PROTO_VERSION, 0, None)
        if options != int(context.options) or minimum != _wire_version(context.minimum_version):
            return None
        return pointer

    def set_list(self, context: ssl.SSLContext, groups: str) -> bool:
        pointer = self.ctx_pointer(context)
        if pointer is None:
            return False
        done: int = self.lib.SSL_CTX_ctrl(ctypes.c_void_p(pointer), SSL_CTRL_SET_GROUPS_LIST, 0, groups.encode("ascii"))
        if done != 1:
            self.lib.ERR_clear_error()
        return done == 1

    def apply(self, context: ssl.SSLContext) -> bool:
        return self.set_list(context, self.groups)


def _wire_version(version: ssl.TLSVersion) -> int:
    """The protocol version as OpenSSL reports it (0 for "no minimum")."""
    return 0 if version is ssl.TLSVersion.MINIMUM_SUPPORTED else int(version)


@functools.cache
def _setter() -> _Stdlib | _LibSsl | None:
    """How this process sets groups, found once (and logged once) on a throw-away context."""
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    probe.minimum_version = ssl.TLSVersion.TLSv1_2
    if hasattr(probe, "set_groups"):
        stdlib = next((_Stdlib(g) for g in GROUP_LISTS if _Stdlib(g).apply(probe)), None)
        return _found(stdlib, "OpenSSL accepts none of " + ", ".join(GROUP_LISTS))
    implementation, version = _interpreter()
    if implementation != "CPython" or not KNOWN_LAYOUTS[0] <= version <= KNOWN_LAYOUTS[1]:
        return _found(None, f"the ssl context layout of {implementation} {version[0]}.{version[1]} is unknown")
    lib, reason = _load_libssl()
    if lib is None:
        return _found(None, reason)
    libssl = _LibSsl(lib)
    if libssl.ctx_pointer(probe) is None:
        return _found(None, "OpenSSL does not read a Python ssl context's settings through its SSL_CTX")
    groups = next((g for g in GROUP_LISTS if libssl.set_list(probe, g)), None)
    return _found(_LibSsl(lib, groups) if groups else None, "OpenSSL accepts none of " + ", ".join(GROUP_LISTS))


def _found(setter: _Stdlib | _LibSsl | None, reason: str) -> _Stdlib | _LibSsl | None:
    if setter is None:
        logger.warning("key-exchange groups cannot be limited (%s); OpenSSL's defaults stay, "
                       "which add P-384, P-521, X448 and finite-field groups", reason)
    else:
        logger.debug("key-exchange groups: %s", setter.groups)
    return setter


def _interpreter() -> tuple[str, tuple[int, int]]:
    """This interpreter's implementation (``"CPython"``, ``"PyPy"``...) and its version (major, minor)."""
    return platform.python_implementation(), (sys.version_info.major, sys.version_info.minor)


def _load_libssl() -> tuple[ctypes.CDLL | None, str]:
    """The OpenSSL the ``ssl`` module uses, with the prototypes of the calls made here; or (None, why not)."""
    path = getattr(sys.modules.get("_ssl"), "__file__", None)
    if not path:
        return None, "the _ssl module is built into the interpreter"
    try:
        lib = ctypes.CDLL(path)
        functions = (lib.OpenSSL_version_num, lib.SSL_CTX_get_options, lib.SSL_CTX_ctrl, lib.ERR_clear_error)
    except (OSError, AttributeError) as exc:
        return None, f"OpenSSL's functions are not reachable from {path} ({exc})"
    version, get_options, ctrl, clear = functions
    version.argtypes, version.restype = [], ctypes.c_ulong
    get_options.argtypes, get_options.restype = [ctypes.c_void_p], ctypes.c_uint64
    ctrl.argtypes, ctrl.restype = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p], ctypes.c_long
    clear.argtypes, clear.restype = [], None
    if version() != ssl.OPENSSL_VERSION_NUMBER:
        return None, f"the OpenSSL found ({version():#x}) is not the ssl module's ({ssl.OPENSSL_VERSION_NUMBER:#x})"
    return lib, ""
