"""A backend that stalls at the TCP level: it accepts connections, reads whatever comes, never answers.

python -m bench.reliability._blackhole --port P
"""

from __future__ import annotations

import argparse

import anyio
import anyio.abc

READ_CHUNK = 65536


async def serve(port: int) -> None:
    async def swallow(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            try:
                while await stream.receive(READ_CHUNK):
                    pass
            except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                return

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=port)
    await listener.serve(swallow)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    anyio.run(serve, parser.parse_args().port)


if __name__ == "__main__":
    main()
