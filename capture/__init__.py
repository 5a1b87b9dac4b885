"""The audit store: interactions recorded by the gateway, and the queries over them.

Knows nothing of HTTP, of the proxy or of the policy package.
"""
