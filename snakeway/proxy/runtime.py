"""The configuration compiled into what the request path reads.

A :class:`Runtime` is immutable and replaced whole on reload: a request
reads ``runtime`` once and sees one configuration from start to end. State
that must outlive a reload (the connection pool, passive health, open
WebSocket counts, round-robin positions of unchanged services) lives in
:class:`Shared` or is carried over from the previous runtime.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from snakeway.admin.figures import Counters, ServiceCounts
from snakeway.config.model import Config, Route, Service, StaticSite
from snakeway.listeners import ListenerKey, ListenerSpec, listener_specs
from snakeway.proxy.accesslog import AccessLog
from snakeway.proxy.balance import Balancer, Health
from snakeway.proxy.pool import UpstreamPool
from snakeway.proxy.routing import Router
from snakeway.proxy.websocket import WebSocketSlots


@dataclass(frozen=True)
class ServiceTarget:
    service: Service
    balancer: Balancer
    counts: ServiceCounts = field(default_factory=ServiceCounts)  # the admin API's figures


Target = ServiceTarget | StaticSite


@dataclass
class Shared:
    """State kept across reloads."""

    pool: UpstreamPool
    health: Health
    slots: WebSocketSlots = field(default_factory=WebSocketSlots)
    access: AccessLog = field(default_factory=AccessLog)
    counters: Counters = field(default_factory=Counters)


@dataclass(frozen=True)
class Runtime:
    config: Config
    listeners: Mapping[ListenerKey, ListenerSpec]
    routers: Mapping[ListenerKey, Router[Target]]
    balancers: Mapping[str, ServiceTarget]

    def router(self, key: ListenerKey) -> Router[Target]:
        return self.routers.get(key) or Router(())


def build_runtime(config: Config, shared: Shared, previous: Runtime | None = None) -> Runtime:
    """Compile ``config``; services unchanged since ``previous`` keep their balancer."""
    targets: dict[str, ServiceTarget] = {}
    listeners = listener_specs(config)
    per_key: dict[ListenerKey, list[tuple[Route, Target]]] = {key: [] for key in listeners}
    for ingress in config.ingresses:
        entries = per_key[(ingress.bind.interface, ingress.bind.port)]
        for service in ingress.services:
            old = previous.balancers.get(service.name) if previous else None
            if old is not None and old.service == service:
                target = old
            else:
                target = ServiceTarget(service, Balancer(service, shared.health), shared.counters.service(service.name))
            targets[service.name] = target
            entries.extend((route, target) for route in service.routes)
        entries.extend((site.route, site) for site in ingress.static_files)
    routers = {key: Router(entries) for key, entries in per_key.items()}
    return Runtime(config=config, listeners=listeners, routers=routers, balancers=targets)
