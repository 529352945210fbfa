"""`create_proxy_server`: the original designs' keywords land in the right configuration settings."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from mcplane_sidecar import create_proxy_server
from mcplane_sidecar.config import ConfigError


@dataclass
class SqsClientConfig:
    """The attribute names of asyncmcp 0.2.1's own SQS client config."""

    read_queue_url: str
    response_queue_url: str
    client_id: str | None = None
    max_messages: int = 10
    wait_time_seconds: int = 20
    visibility_timeout_seconds: int = 30
    message_attributes: dict[str, object] | None = None


def test_the_async_design_keywords_map_onto_the_config() -> None:
    proxy = create_proxy_server(
        backend_transport="sqs",
        backend_config=SqsClientConfig(
            read_queue_url="https://sqs.example/1/requests",
            response_queue_url="https://sqs.example/1/responses",
            client_id="team-a",
            wait_time_seconds=5,
            message_attributes={"Team": 7},
        ),
        host="0.0.0.0",
        port=9000,
        server_path="/mcp",
        session_timeout=120,
        max_sessions=50,
        stateless=True,
        cors_origins=["http://localhost:3000"],
        auth_token="secret-token",
    )
    config = proxy.config
    assert config.backend.kind == "sqs"
    assert config.backend.sqs is not None
    assert config.backend.sqs.request_queue_url == "https://sqs.example/1/requests"
    assert config.backend.sqs.reply_queue_url == "https://sqs.example/1/responses"
    assert config.backend.sqs.wait_time_seconds == 5
    assert config.backend.client_id == "team-a"
    assert config.backend.message_attributes == {"Team": "7"}
    assert (config.server.host, config.server.port, config.server.path) == ("0.0.0.0", 9000, "/mcp")
    assert (config.sessions.idle_timeout, config.sessions.max_sessions) == (120, 50)
    assert config.sessions.stateless is True
    assert config.security.cors_origins == ["http://localhost:3000"]
    assert [token.resolve() for token in config.security.tokens] == ["secret-token"]


def test_mapping_configs_use_this_projects_names() -> None:
    proxy = create_proxy_server(
        backend_transport="sns_sqs",
        backend_config={
            "sns": {"request_topic_arn": "arn:aws:sns:r:1:req", "reply_topic_arn": "arn:aws:sns:r:1:rep"},
            "aws": {"region": "eu-west-1"},
        },
    )
    assert proxy.config.backend.kind == "sns-sqs"
    assert proxy.config.backend.aws.region == "eu-west-1"


def test_a_webhook_backend_needs_the_public_base_url() -> None:
    with pytest.raises(ConfigError, match="public_base_url"):
        create_proxy_server(
            backend_transport="webhook", backend_config={"webhook": {"server_url": "http://s/r"}}
        )
    proxy = create_proxy_server(
        backend_transport="webhook",
        backend_config={"webhook": {"server_url": "http://s/r", "public_base_url": "http://me:8080"}},
    )
    assert proxy.config.backend.webhook is not None
