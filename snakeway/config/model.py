"""The configuration as immutable objects.

Only :mod:`snakeway.config.load` builds these from HCL; everything else in
snakeway receives them ready-made and never sees a raw dict. Defaults live
here, in one place, and ``docs/configuration.md`` lists them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path


class Strategy(enum.Enum):
    """How a service picks an upstream for each request."""

    FAILOVER = "failover"
    ROUND_ROBIN = "round_robin"
    RANDOM = "random"


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class Upstream:
    endpoint: Endpoint
    weight: int = 1


@dataclass(frozen=True)
class Route:
    """Where a request may go: a set of host patterns and a path prefix.

    ``hosts`` are lower-case ASCII patterns: an exact name, ``*.parent`` (one
    more label) or ``*`` (any host). ``path`` starts with ``/`` and has no
    trailing slash unless it is ``/`` itself; the configuration holds it in
    the form request paths are compared in (printable ASCII, normalised by
    :func:`snakeway.uri.normalize_path`).
    """

    hosts: tuple[str, ...]
    path: str
    enable_websocket: bool = False
    ws_max_connections: int | None = None
    max_body_bytes: int | None = None
    # A WebSocket tunnel with no byte moving either way for this long is closed.
    ws_idle_timeout_seconds: float = 3600.0
    # Proxied routes: the upstream gets the path without ``path`` (static files always strip it).
    strip_prefix: bool = False


@dataclass(frozen=True)
class Service:
    name: str
    routes: tuple[Route, ...]
    upstreams: tuple[Upstream, ...]
    strategy: Strategy = Strategy.FAILOVER


@dataclass(frozen=True)
class StaticSite:
    """A folder served as static files under ``route``."""

    route: Route
    file_dir: Path
    index: str | None = "index.html"
    directory_listing: bool = False


class TlsMode(enum.Enum):
    MANUAL = "manual"      # certificate files named in the configuration
    INTERNAL = "internal"  # issued by snakeway's own local CA
    ACME = "acme"          # obtained and renewed from an ACME CA


class Challenge(enum.Enum):
    HTTP_01 = "http-01"
    TLS_ALPN_01 = "tls-alpn-01"


class KeyType(enum.Enum):
    ECDSA_P256 = "ecdsa-p256"
    RSA2048 = "rsa2048"


@dataclass(frozen=True)
class CertFiles:
    """A PEM certificate chain and its private key (paths resolved)."""

    cert: Path
    key: Path


# RFC 6797 and the HSTS preload list: a preloaded site asks for at least a year, subdomains included.
HSTS_PRELOAD_MIN_AGE = 31_536_000


@dataclass(frozen=True)
class Hsts:
    """``bind.tls.hsts``: the ``Strict-Transport-Security`` header of every response on the listener."""

    max_age_seconds: int = HSTS_PRELOAD_MIN_AGE
    include_subdomains: bool = False
    preload: bool = False

    @property
    def value(self) -> bytes:
        """The header's value, e.g. ``max-age=31536000; includeSubDomains; preload``."""
        return b"max-age=%d" % self.max_age_seconds + (
            b"; includeSubDomains" if self.include_subdomains else b""
        ) + (b"; preload" if self.preload else b"")


@dataclass(frozen=True)
class Tls:
    """``bind.tls``: how a listener gets its certificates."""

    mode: TlsMode
    certs: tuple[CertFiles, ...] = ()      # manual
    default: str | None = None             # certificate for no or unknown SNI (a host name)
    domains: tuple[str, ...] = ()          # internal and acme (ASCII, lower case)
    challenge: Challenge = Challenge.HTTP_01
    key_type: KeyType = KeyType.ECDSA_P256
    certificate_per_domain: bool = False   # acme: one certificate per name instead of one for all
    handshake_timeout_seconds: float = 10.0
    hsts: Hsts | None = None               # off unless written


@dataclass(frozen=True)
class Redirect:
    """``bind.redirect_http_to_https``: a plain listener that redirects to the TLS one."""

    port: int
    status: int = 308


@dataclass(frozen=True)
class Bind:
    """A listening address. ``interface`` is already an IP literal."""

    interface: str
    port: int
    tls: Tls | None = None
    redirect: Redirect | None = None

    @property
    def url_host(self) -> str:
        return f"[{self.interface}]" if ":" in self.interface else self.interface


@dataclass(frozen=True)
class Admin:
    """``bind_admin``: the admin listener, its optional TLS and the bearer tokens it accepts.

    ``interface`` is an IP literal that is not a wildcard. ``tokens`` are the lines of ``token_file``
    as read when the configuration was loaded (a reload reads the file again).
    """

    interface: str
    port: int
    token_file: Path
    tokens: tuple[bytes, ...] = field(default=(), repr=False)
    tls: Tls | None = None
    source: Path | None = None  # the file that writes it
    at: tuple[str, ...] = ("bind_admin",)  # its key path in that file

    @property
    def internal_tls(self) -> bool:
        return self.tls is not None and self.tls.mode is TlsMode.INTERNAL

    @property
    def url_host(self) -> str:
        return f"[{self.interface}]" if ":" in self.interface else self.interface


@dataclass(frozen=True)
class Ingress:
    name: str
    bind: Bind
    services: tuple[Service, ...] = ()
    static_files: tuple[StaticSite, ...] = ()
    source: Path | None = None


@dataclass(frozen=True)
class UpstreamSettings:
    connection_timeout_seconds: float = 10.0
    read_timeout_seconds: float = 60.0
    connection_pool_size: int = 128
    pool_idle_seconds: float = 90.0
    # How long an upstream that refused a connection is skipped.
    failure_cooldown_seconds: float = 10.0


@dataclass(frozen=True)
class ClientSettings:
    header_timeout_seconds: float = 15.0
    idle_timeout_seconds: float = 60.0
    max_header_bytes: int = 64 * 1024
    # Time a write to the client may go without progress (nginx's send_timeout): see snakeway/tcp.py.
    send_timeout_seconds: float = 60.0
    # Time allowed between two reads of a request body (nginx's client_body_timeout).
    body_timeout_seconds: float = 60.0
    # A request body known to fit in this many bytes is read before an upstream is connected.
    buffer_request_body_bytes: int = 64 * 1024
    # More header fields than this in a request is 431.
    max_header_count: int = 100
    # Forward header fields whose names contain "_" (nginx's underscores_in_headers).
    underscores_in_headers: bool = False


class StoreType(enum.Enum):
    FILESYSTEM = "filesystem"
    MEMORY = "memory"
    REDIS = "redis"


# What an ACME CA issues at most in one certificate (Let's Encrypt's limit, and the common one).
MAX_NAMES_PER_CERTIFICATE = 100


@dataclass(frozen=True)
class RateLimitSettings:
    """``tls_automation.acme.rate_limits``: the CA's rate limits, which snakeway never exceeds.

    The defaults are Let's Encrypt's. They are spent from one budget kept in the
    certificate store, shared by every worker (see docs/configuration.md).
    """

    new_orders_per_3h: int = 300
    failed_validations_per_name_per_hour: int = 5
    duplicate_certificates_per_week: int = 5
    certificates_per_domain_per_week: int = 50


@dataclass(frozen=True)
class ExternalAccountBinding:
    """``acme.eab``: the CA's key identifier and the file holding its base64url HMAC key (RFC 8555 §7.3.4)."""

    key_id: str
    mac_key_file: Path


@dataclass(frozen=True)
class AcmeSettings:
    """One ACME CA (an *issuer*): ``tls_automation.acme``, or one item of that list."""

    directory_url: str = "https://acme-v02.api.letsencrypt.org/directory"
    contact_email: tuple[str, ...] = ()
    ca_file: Path | None = None        # trust root for the ACME server itself
    data_dir: Path | None = None       # ACME state; default <state_dir>/acme (first issuer only)
    max_concurrent_orders: int = 4     # orders in flight at once to this CA, across all certificates
    rate_limits: RateLimitSettings = field(default_factory=RateLimitSettings)
    profile: str | None = None         # the newOrder "profile"; a CA without it gets no order
    preferred_chain: str | None = None  # issuer CN of the alternate chain to serve; default: the CA's default chain
    eab: ExternalAccountBinding | None = None


@dataclass(frozen=True)
class CertStoreSettings:
    type: StoreType = StoreType.FILESYSTEM
    cert_dir: Path | None = None       # default <state_dir>/certs (filesystem)
    url: str | None = None             # redis:// or rediss:// (redis; required)
    key_prefix: str = "snakeway"       # every Redis key starts with "<key_prefix>:" (redis)
    encryption_key_file: Path | None = None  # 32 bytes in base64 sealing private keys (redis); None: in clear
    lease_seconds: float = 30.0        # a lock's lease, renewed every third of it; a dead holder's ends (redis)


@dataclass(frozen=True)
class Hooks:
    """``tls_automation.hooks``: programs run after certificate events (see docs/automatic-https.md)."""

    # argv of the program run after each certificate issued or renewed (the first item an absolute path to an
    # executable); empty: none. Run by the process that obtained the certificate, once per issuance.
    on_renewed: tuple[str, ...] = ()
    timeout_seconds: float = 60.0      # then the hook is killed (and its failure logged)


@dataclass(frozen=True)
class TlsAutomation:
    # Renew with this many days left, but never with more than half the lifetime left. None: the lifetime
    # rule, a third of the lifetime left (half for certificates shorter than 10 days).
    renew_within_days: float | None = None
    check_interval_seconds: float = 600.0
    acme: AcmeSettings = field(default_factory=AcmeSettings)  # the first issuer
    cert_store: CertStoreSettings = field(default_factory=CertStoreSettings)
    fallback_acme: tuple[AcmeSettings, ...] = ()  # the issuers after the first, in order (``acme`` as a list)
    # A certificate that failed this many attempts in a row at one issuer is ordered from the next one.
    issuer_fallback_after_failures: int = 3
    hooks: Hooks = field(default_factory=Hooks)

    @property
    def issuers(self) -> tuple[AcmeSettings, ...]:
        """Every ACME CA, in the order they are tried."""
        return (self.acme, *self.fallback_acme)


def default_state_dir() -> Path:
    """Where snakeway keeps what it creates (local CA, certificates): XDG data home."""
    import os

    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "snakeway"


class LogFormat(enum.Enum):
    TEXT = "text"
    JSON = "json"


# The levels server.log.level names, as the logging module numbers them.
LOG_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


@dataclass(frozen=True)
class LogSettings:
    """``server.log``: how snakeway writes its log (stderr) and its access lines."""

    format: LogFormat = LogFormat.TEXT
    level: int = LOG_LEVELS["info"]  # a logging level: what the server log keeps (access lines follow access_log)


@dataclass(frozen=True)
class ServerSettings:
    version: int = 1
    pid_file: Path | None = None
    drain_seconds: float = 10.0
    upstream: UpstreamSettings = field(default_factory=UpstreamSettings)
    client: ClientSettings = field(default_factory=ClientSettings)
    state_dir: Path = field(default_factory=default_state_dir)
    tls_automation: TlsAutomation | None = None
    # Processes sharing the listening ports (SO_REUSEPORT); default: one per core.
    workers: int = field(default_factory=lambda: _cpu_count())
    # "stderr", "off", or a file (appended to; opened again on reload).
    access_log: str | Path = "stderr"
    log: LogSettings = field(default_factory=LogSettings)
    # Whether proxied requests and responses get "Via: 1.1 snakeway" (RFC 9110 §7.6.3).
    via: bool = True


def _cpu_count() -> int:
    import os

    return os.cpu_count() or 1


@dataclass(frozen=True)
class Config:
    server: ServerSettings = field(default_factory=ServerSettings)
    ingresses: tuple[Ingress, ...] = ()
    source: Path | None = None
    admin: Admin | None = None  # bind_admin, in the entry file or one ingress
