"""What start-up leaves behind. A sidecar loads the AWS SDK only when its backend is a queue: boto3 and
botocore cost about 10 MiB of RSS and 0.3 s of start-up that an HTTP or stdio sidecar, the common case, has
no use for. And what start-up built is frozen out of the garbage collector, whose young generation then
waits for far more live objects than a steady load keeps in flight."""

from __future__ import annotations

import json
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


FREEZE_AND_REPORT = textwrap.dedent(
    """
    import gc, json
    from mcplane_sidecar import build_config, create_app
    from mcplane_sidecar.server import freeze_startup_objects
    create_app(build_config({"backend": {"kind": "http", "url": "http://127.0.0.1:9/mcp"}}))
    before = gc.get_threshold()
    freeze_startup_objects()
    print(json.dumps({"before": before, "after": gc.get_threshold(), "frozen": gc.get_freeze_count()}))
    """
)


def test_start_up_objects_are_frozen_and_requests_in_flight_do_not_trigger_collections() -> None:
    done = subprocess.run(
        [sys.executable, "-c", FREEZE_AND_REPORT], capture_output=True, text=True, timeout=60, check=True
    )
    report = json.loads(done.stdout)
    assert report["frozen"] > 50_000  # the app, its modules and pools: out of every later collection
    young_before, *older_before = report["before"]
    young_after, *older_after = report["after"]
    assert young_after >= 10 * young_before  # a few hundred live objects no longer start a collection
    assert older_after == older_before  # the older generations keep CPython's cadence
