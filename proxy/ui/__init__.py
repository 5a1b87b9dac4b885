"""The operator's page, `/ui`: held tool calls decided live, and the audit trail read.

Rendered on the server (Jinja2 templates, every value escaped and scrubbed of secrets), so it
reads without JavaScript; a small script adds the live list of held calls (SSE), deciding
without a reload, and the countdown to failing closed. No build step: the templates, the
stylesheet and the script are the files in this package.
"""
