"""Tool-call permission policy: rules parsed once into frozen values, and their evaluation.

Pure: knows nothing of HTTP, the proxy or the store.
"""
