"""Carrying a call to a provider: the only room that imports litellm."""
