"""Meter clocks: drift alarms and the automatic time-sync policy (docs/clock.md)."""

from gateway.control.meter_clock.policy import SyncRule, SyncVerdict, decide
from gateway.control.meter_clock.runner import MeterClockWatch

__all__ = ["MeterClockWatch", "SyncRule", "SyncVerdict", "decide"]
