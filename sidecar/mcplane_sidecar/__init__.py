"""mcplane sidecar: a message-level MCP proxy."""

from mcplane_sidecar.app import create_app
from mcplane_sidecar.config import SidecarConfig, build_config
from mcplane_sidecar.programmatic import ProxyServer, create_proxy_server

__all__ = ["ProxyServer", "SidecarConfig", "build_config", "create_app", "create_proxy_server"]
