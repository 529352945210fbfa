"""The small MCP server behind `make demo` (`mcplane-sidecar --demo`), run over stdio by the sidecar."""

from __future__ import annotations

from mcp.server.mcpserver import Context, MCPServer

demo = MCPServer("mcplane-demo")


@demo.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@demo.tool()
def add(a: float, b: float) -> float:
    """Add two numbers."""
    return a + b


@demo.tool()
async def countdown(start: int, ctx: Context) -> str:
    """Count down to zero, reporting progress at each step."""
    for step in range(start, 0, -1):
        await ctx.report_progress(start - step, start, f"{step}...")
    return "liftoff"


@demo.resource("demo://readme")
def readme() -> str:
    """What this server is."""
    return "The mcplane demo server: tools echo, add and countdown; this resource; a greeting prompt."


@demo.prompt()
def greeting(name: str) -> str:
    """Greet someone."""
    return f"Say hello to {name}."


def main() -> None:
    demo.run("stdio")


if __name__ == "__main__":
    main()
