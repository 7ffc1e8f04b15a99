"""Which sockets a configuration listens on, and what each one does. Pure, no I/O.

Ingresses that share an interface and a port share one listener: their
routes form one routing table and, on a TLS listener, their certificates one
certificate map. A ``redirect_http_to_https`` adds a plain listener whose only
jobs are to answer ACME HTTP-01 challenges and to redirect to the TLS port.
A ``bind_admin`` adds the admin listener (:mod:`snakeway.admin`), TLS or not.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass

from snakeway import hostnames
from snakeway.config.model import Config, Tls, TlsMode

ListenerKey = tuple[str, int]


class Role(enum.Enum):
    HTTP = "http"          # plain HTTP: routes
    HTTPS = "https"        # TLS, then routes
    REDIRECT = "redirect"  # plain HTTP: ACME challenges, then a redirect to HTTPS
    ADMIN = "admin"        # the admin API (bind_admin), TLS or not


@dataclass(frozen=True)
class ListenerSpec:
    interface: str
    port: int
    role: Role
    tls: tuple[Tls, ...] = ()
    redirect_port: int | None = None
    redirect_status: int = 308
    # Headers snakeway puts on every response of this listener (Strict-Transport-Security), ready to send.
    response_headers: tuple[tuple[bytes, bytes], ...] = ()

    @property
    def key(self) -> ListenerKey:
        return (self.interface, self.port)

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @functools.cached_property
    def handshake_timeout(self) -> float:
        # Read for every TLS connection: computed once per listener (a frozen dataclass keeps a cached_property).
        return min((t.handshake_timeout_seconds for t in self.tls), default=10.0)

    def url(self, port: int | None = None) -> str:
        host = f"[{self.interface}]" if ":" in self.interface else self.interface
        return f"{self.scheme}://{host}:{port if port is not None else self.port}"


def listener_specs(config: Config) -> dict[ListenerKey, ListenerSpec]:
    """Every listener of ``config``, in configuration order."""
    specs: dict[ListenerKey, ListenerSpec] = {}
    redirects: dict[ListenerKey, ListenerSpec] = {}
    for ingress in config.ingresses:
        bind = ingress.bind
        key = (bind.interface, bind.port)
        old = specs.get(key)
        tls = (old.tls if old else ()) + ((bind.tls,) if bind.tls and bind.tls not in (old.tls if old else ()) else ())
        role = Role.HTTPS if tls else Role.HTTP
        specs[key] = ListenerSpec(bind.interface, bind.port, role, tls, response_headers=_response_headers(tls))
        if bind.redirect is not None:
            rkey = (bind.interface, bind.redirect.port)
            redirects.setdefault(
                rkey,
                ListenerSpec(
                    bind.interface,
                    bind.redirect.port,
                    Role.REDIRECT,
                    redirect_port=bind.port,
                    redirect_status=bind.redirect.status,
                ),
            )
    for rkey, spec in redirects.items():
        specs.setdefault(rkey, spec)
    if (admin := config.admin) is not None:  # the loader gives it a port of its own
        specs[(admin.interface, admin.port)] = ListenerSpec(
            admin.interface, admin.port, Role.ADMIN, (admin.tls,) if admin.tls else ()
        )
    return specs


def _response_headers(tls: tuple[Tls, ...]) -> tuple[tuple[bytes, bytes], ...]:
    """``Strict-Transport-Security`` when the listener's tls asks for it (the loader makes sharers agree)."""
    hsts = next((t.hsts for t in tls if t.hsts is not None), None)
    return ((b"strict-transport-security", hsts.value),) if hsts is not None else ()


def cert_ids(tls: Tls) -> tuple[str, ...]:
    """Identifiers of the certificates a ``tls`` block asks for (see CertRegistry)."""
    if tls.mode is TlsMode.MANUAL:
        return tuple(f"manual:{files.cert}" for files in tls.certs)
    if tls.mode is TlsMode.INTERNAL:
        return ("internal:" + ",".join(tls.domains),)
    if tls.certificate_per_domain:
        return tuple(f"acme:{name}" for name in tls.domains)
    return ("acme:" + tls.domains[0],)


def default_name(spec: ListenerSpec) -> str | None:
    """The name whose certificate answers handshakes without SNI or for unknown names.

    An explicit ``default``; otherwise, on a listener whose only certificate
    is one manual ``cert``/``key`` pair, that certificate (``"*"`` here means
    "the listener's only certificate"); otherwise none, and such handshakes
    are refused with ``unrecognized_name``.
    """
    for tls in spec.tls:
        if tls.default:
            return tls.default
    if len(spec.tls) == 1 and spec.tls[0].mode is TlsMode.MANUAL and len(spec.tls[0].certs) == 1:
        return "*"
    return None


def redirect_location(host: str, target: str, https_port: int) -> str:
    """``https://<host without port>[:port]<target>`` for a redirect listener."""
    bare = hostnames.host_part(host)
    port = "" if https_port == 443 else f":{https_port}"
    return f"https://{bare}{port}{target}"
