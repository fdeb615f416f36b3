"""The ``edge-sdk`` command: the one place that turns errors into messages and exit codes."""
