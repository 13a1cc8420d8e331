"""The composition root: the CLI, the daemon's lifecycle, task supervision, health and systemd.

Only this package knows every other one; it builds a runtime from one validated configuration and
tears it down again (start and reload go through the same code).
"""
