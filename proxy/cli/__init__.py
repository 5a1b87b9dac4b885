"""The `ctxgate` command."""
