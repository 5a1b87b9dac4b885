"""OpenAI chat completions: the request as the client sent it, streams reassembled."""
