"""Telling people a tool call waits for them: webhooks (Slack-compatible or generic JSON)."""
