"""Configuration: layers merge in order, environment overrides reach nested settings, mistakes are named."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcplane_sidecar.cli import banner, resolve_config
from mcplane_sidecar.config import ConfigError, SecretValue, build_config, env_overrides, load_config_file


def test_env_overrides_reach_nested_settings_and_parse_scalars() -> None:
    config = build_config(
        {"backend": {"url": "http://127.0.0.1:1/mcp"}},
        env_overrides(
            {"MCPLANE_SESSIONS__MAX_SESSIONS": "7", "MCPLANE_LOGGING__JSON": "false", "OTHER": "x"}
        ),
    )
    assert config.sessions.max_sessions == 7
    assert config.logging.json_format is False


def test_every_problem_is_reported_by_setting_name() -> None:
    with pytest.raises(ConfigError) as caught:
        build_config({"backend": {"kind": "stdio"}, "sessions": {"max_sesions": 3, "idle_timeout": -1}})
    text = str(caught.value)
    assert "backend.kind stdio needs backend.stdio.command" in text
    assert "sessions.max_sesions" in text
    assert "sessions.idle_timeout" in text


def test_backend_url_must_be_http() -> None:
    with pytest.raises(ConfigError, match="http:// or https://"):
        build_config({"backend": {"kind": "http", "url": "ftp://x"}})


def test_secret_values_come_from_env_or_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret_file = tmp_path / "token"
    secret_file.write_text("from-file\n")
    monkeypatch.setenv("MY_TOKEN", "from-env")
    assert SecretValue(file=secret_file).resolve() == "from-file"
    assert SecretValue(env="MY_TOKEN").resolve() == "from-env"
    with pytest.raises(ValueError, match="exactly one"):
        SecretValue(value="a", env="B")
    monkeypatch.delenv("MY_TOKEN")
    with pytest.raises(ValueError, match="MY_TOKEN is not set"):
        SecretValue(env="MY_TOKEN").resolve()


def test_config_file_errors_are_clear(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("backend: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config_file(bad)
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config_file(tmp_path / "missing.yaml")


def test_cli_keeps_the_original_design_shape() -> None:
    config = resolve_config(
        ["http://127.0.0.1:9/mcp", "--name", "P", "--port", "9001", "--transport", "http"], {}
    )
    assert (config.name, config.server.port, config.server.transport) == ("P", 9001, "http")
    assert (config.backend.kind, config.backend.url) == ("auto", "http://127.0.0.1:9/mcp")
    forced = resolve_config(["http://127.0.0.1:9/sse", "--transport-type", "sse"], {})
    assert forced.backend.kind == "sse"
    assert forced.server.transport == "stdio"  # the original design's default front


def test_cli_runs_a_stdio_backend_after_double_dash() -> None:
    config = resolve_config(["--transport", "http", "--", "python", "-m", "server", "--flag"], {})
    assert config.backend.kind == "stdio"
    assert config.backend.stdio is not None
    assert (config.backend.stdio.command, config.backend.stdio.args) == ("python", ["-m", "server", "--flag"])


def test_cli_layers_file_then_env_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "backend: {kind: http, url: 'http://127.0.0.1:1/mcp'}\n"
        "server: {port: 1000}\n"
        "sessions: {max_sessions: 3}\n"
    )
    config = resolve_config(
        ["--config", str(path), "--port", "3000"],
        {"MCPLANE_SERVER__PORT": "2000", "MCPLANE_SESSIONS__MAX_SESSIONS": "4"},
    )
    assert config.server.port == 3000
    assert config.sessions.max_sessions == 4
    assert config.server.transport == "http"


def test_cli_without_a_target_says_so() -> None:
    with pytest.raises(ConfigError, match="nothing to proxy"):
        resolve_config([], {})


def test_the_banner_names_every_backend_kind() -> None:
    sqs = resolve_config(
        ["--config", "/dev/null"],
        {
            "MCPLANE_BACKEND__KIND": "sqs",
            "MCPLANE_BACKEND__SQS__REQUEST_QUEUE_URL": "https://sqs.example/1/q",
        },
    )
    assert "proxying SQS queue https://sqs.example/1/q" in banner(sqs, demo=False)
    stdio = resolve_config(["--transport", "http", "--", "python", "-m", "server"], {})
    assert "proxying python -m server" in banner(stdio, demo=False)
