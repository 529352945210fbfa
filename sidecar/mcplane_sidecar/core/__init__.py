"""The proxy core: client sessions, their routing to backend links, and the registry that owns them."""
