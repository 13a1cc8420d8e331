"""``edge-gateway demo``: simulated meters, a broker and the real daemon with a live view.

It lives beside the simulators it drives, not in the daemon's package: the CLI looks it up by name
when asked for the demo, so a gateway runs without it.
"""
