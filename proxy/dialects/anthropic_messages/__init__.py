"""Anthropic Messages: the anthropic SDK's and Claude Code's API, its tool_use blocks gated."""
