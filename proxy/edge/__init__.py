"""The HTTP edge: the server, errors, bodies, wire encoding, logs, metrics, health, access, redaction."""
