"""The MCP server (Model Context Protocol, on the official `mcp` SDK): AI agents (Claude, IDE assistants, Blender
MCP, Lemonade-style gateways) make 3-D assets through tools that map onto the REST v1 job API. docs/MCP.md shows how to
add it to a client. One concern per module:

    tools     the tools and the job-file resources, over one job runner (stdio and HTTP alike)
    command   `python -m desktop mcp`: stdio with its own runner, or --http (the REST server)
    endpoint  /mcp on the REST server: streamable HTTP behind the API's token rules
"""


def main(argv=None) -> int:
    """`python -m desktop mcp` (imports the SDK only when run)."""
    from .command import main as run

    return run(argv)
