"""TLS termination: certificates as contexts, the SNI cert map, and the handshake.

Host names are :mod:`snakeway.hostnames`' (canonical names, one-label wildcards, ``covers``). Modules, from the
bottom up:

* :mod:`~snakeway.tls.certinfo` (pure): ``validate_pair`` -> ``CertInfo``; ``CertificateError``.
* :mod:`~snakeway.tls.contexts`: the one ``SSLContext`` factory (``server_context``, ``context_from_pem``).
* :mod:`~snakeway.tls.certmap` (pure): the immutable ``CertMap`` and its ``CertMapHolder``.
* :mod:`~snakeway.tls.sni`: ``make_sni_callback``, ``listener_context``.
* :mod:`~snakeway.tls.sniff` (pure) and :mod:`~snakeway.tls.prefixed`: looking at a connection's first bytes.
* :mod:`~snakeway.tls.handshake`: ``accept_tls``, ``HandshakeInfo``, ``HANDSHAKE``, ``covers``.
* :mod:`~snakeway.tls.internal_ca`: the local CA for ``mode = "internal"``.
"""

from __future__ import annotations

from snakeway.tls.certinfo import CertificateError as CertificateError
from snakeway.tls.certinfo import CertInfo as CertInfo
from snakeway.tls.certinfo import validate_pair as validate_pair
from snakeway.tls.certmap import CertMap as CertMap
from snakeway.tls.certmap import CertMapHolder as CertMapHolder
from snakeway.tls.contexts import context_from_pem as context_from_pem
from snakeway.tls.contexts import server_context as server_context
from snakeway.tls.handshake import HANDSHAKE as HANDSHAKE
from snakeway.tls.handshake import HandshakeInfo as HandshakeInfo
from snakeway.tls.handshake import accept_tls as accept_tls
from snakeway.tls.handshake import covers as covers
from snakeway.tls.internal_ca import LocalCA as LocalCA
from snakeway.tls.prefixed import PrefixedStream as PrefixedStream
from snakeway.tls.sni import listener_context as listener_context
from snakeway.tls.sni import make_sni_callback as make_sni_callback
