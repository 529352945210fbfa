"""A sidecar loads the AWS SDK only when its backend is a queue: boto3 and botocore cost about 10 MiB of RSS
and 0.3 s of start-up that an HTTP or stdio sidecar, the common case, has no use for."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

BUILD_AND_LIST_AWS_MODULES = textwrap.dedent(
    """
    import json, sys
    from mcplane_sidecar import build_config, create_app
    create_app(build_config(json.loads(sys.argv[1])))
    roots = {name.split(".")[0] for name in sys.modules}
    print(sorted(roots & {"boto3", "botocore", "aioboto3"}))
    """
)


def _aws_modules_loaded(backend: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", BUILD_AND_LIST_AWS_MODULES, backend],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


@pytest.mark.parametrize(
    "backend",
    [
        '{"backend": {"kind": "http", "url": "http://127.0.0.1:9/mcp"}}',
        '{"backend": {"kind": "stdio", "stdio": {"command": "true"}}}',
    ],
)
def test_http_and_stdio_sidecars_do_not_load_the_aws_sdk(backend: str) -> None:
    assert _aws_modules_loaded(backend) == "[]"


def test_a_queue_sidecar_does() -> None:
    sqs = '{"backend": {"kind": "sqs", "sqs": {"request_queue_url": "http://127.0.0.1:9/1/requests"}}}'
    assert _aws_modules_loaded(sqs) == "['aioboto3', 'boto3', 'botocore']"
