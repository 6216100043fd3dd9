"""What the gateway's parts share: settings, the four upstreams and the catalog."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.catalog import Catalog
from gateway.config import GatewaySettings
from gateway.upstreams import Upstreams


@dataclass
class Deps:
    settings: GatewaySettings
    upstreams: Upstreams
    catalog: Catalog
