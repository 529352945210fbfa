"""Structured logs: one JSON object per line, with the fields passed as `extra` (the session id)."""

from __future__ import annotations

import io
import json
import logging

import pytest

from mcplane_sidecar.logs import configure_logging


@pytest.fixture
def restore_root_logger() -> object:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    yield None
    root.handlers[:], level = saved
    root.setLevel(level)


@pytest.mark.usefixtures("restore_root_logger")
def test_json_lines_carry_extra_fields_and_exceptions() -> None:
    out = io.StringIO()
    configure_logging("info", json_format=True, stream=out)
    log = logging.getLogger("mcplane_sidecar.test")
    log.info("session opened", extra={"session_id": "AbCd1234"})
    log.debug("not shown at info")
    try:
        int("boom ☃")
    except ValueError:
        log.exception("failed")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["msg"] for line in lines] == ["session opened", "failed"]
    assert lines[0]["session_id"] == "AbCd1234"
    assert lines[0]["level"] == "info"
    assert lines[0]["logger"] == "mcplane_sidecar.test"
    assert lines[1]["level"] == "error"
    assert "ValueError: invalid literal for int() with base 10: 'boom ☃'" in lines[1]["exc"]
