"""Acquisition: the bus tasks that talk to meters, and nothing downstream.

One asyncio task owns each bus and nothing else writes to it (a half-duplex RS-485 line carries
one transaction at a time; buses run concurrently). A bus turns wire exchanges into ``PollResult``s
and ``BusEvent``s on a bounded queue; what happens to them is the pipeline's business.
"""
