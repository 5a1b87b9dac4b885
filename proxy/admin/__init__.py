"""The management APIs: interactions, sessions, memories and ingestion, approvals, the OpenAPI contract."""
