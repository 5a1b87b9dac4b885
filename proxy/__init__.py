"""The gateway: aiohttp application, OpenAI-compatible handlers, CLI."""
