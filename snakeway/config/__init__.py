"""Configuration: the frozen model and the HCL loader that builds it.

Runtime code receives a :class:`Config`; only :func:`load_config` reads files.
"""

from snakeway.config.load import load_config as load_config
from snakeway.config.model import Bind as Bind
from snakeway.config.model import ClientSettings as ClientSettings
from snakeway.config.model import Config as Config
from snakeway.config.model import Endpoint as Endpoint
from snakeway.config.model import Ingress as Ingress
from snakeway.config.model import Route as Route
from snakeway.config.model import ServerSettings as ServerSettings
from snakeway.config.model import Service as Service
from snakeway.config.model import StaticSite as StaticSite
from snakeway.config.model import Strategy as Strategy
from snakeway.config.model import Upstream as Upstream
from snakeway.config.model import UpstreamSettings as UpstreamSettings

__all__ = [
    "Bind",
    "ClientSettings",
    "Config",
    "Endpoint",
    "Ingress",
    "Route",
    "ServerSettings",
    "Service",
    "StaticSite",
    "Strategy",
    "Upstream",
    "UpstreamSettings",
    "load_config",
]
