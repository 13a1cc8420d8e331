"""Bus tasks: one asyncio task owns each bus and nothing else writes to it (a half-duplex RS-485
line carries one transaction at a time; buses run concurrently)."""
