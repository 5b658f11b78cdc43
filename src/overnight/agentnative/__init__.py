"""Driving overnight from inside a coding agent: `overnight mcp` (a Model Context Protocol
server whose submissions go through the same loop, pipeline and recorder as any proposer's
proposals) and the instructions `overnight init --agent` writes for the agent."""
