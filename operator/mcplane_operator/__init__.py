"""mcplane operator: reconciles `MCPProxy` resources into a sidecar Deployment, its config and Service."""

from mcplane_operator.model import (
    API_VERSION,
    GROUP,
    KIND,
    PLURAL,
    VERSION,
    MCPProxySpec,
    SpecError,
    parse_spec,
)

__all__ = ["API_VERSION", "GROUP", "KIND", "PLURAL", "VERSION", "MCPProxySpec", "SpecError", "parse_spec"]
