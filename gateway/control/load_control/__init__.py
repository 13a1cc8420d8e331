"""Load control (Q/GDW 1376.1 semantics): limits, rounds, restores, protect and prepaid, as a
sans-IO engine the daemon drives, plus the actuation plans that turn its decisions into verified
relay operations. See docs/load_control.md.

Integration, in the daemon::

    topology = Topology.from_config(config)
    settings = config.load_control                      # [load_control], checked by the loader
    engine = (LoadControlEngine.from_dict(saved, topology, settings) if saved
              else LoadControlEngine(topology, settings))
    dispatch(engine.power_up(time.time()))
    ...
    dispatch(engine.on_power(group_id, t, kw))            # after each group total
    dispatch(engine.on_command(ControlCommand.from_verified(cmd), time.time()))
    dispatch(engine.tick(time.time()))                    # about once a second
    persist(engine.to_dict())                             # after every call that returned output

``dispatch`` sends :class:`SendControl` through :mod:`gateway.control.actuation` on the bus
priority lane and reports each result with ``engine.on_actuation(request_id, t, ok, reason)``.
"""

from gateway.control.load_control.engine import GroupView, LoadControlEngine
from gateway.control.load_control.events import (
    CommandOutcome,
    ControlCommand,
    Output,
    PublishAlarm,
    RecordRound,
    SendControl,
)
from gateway.control.load_control.limits import (
    LimitKind,
    LimitParamsError,
    check_params,
    parse_limit,
)
from gateway.control.load_control.rounds import default_rounds
from gateway.control.load_control.settings import (
    EngineSettings,
    GroupSettings,
    GroupSpec,
    MeterSpec,
    PrepaidSettings,
    SettingsError,
    Topology,
)

__all__ = [
    "CommandOutcome",
    "ControlCommand",
    "EngineSettings",
    "GroupSettings",
    "GroupSpec",
    "GroupView",
    "LimitKind",
    "LimitParamsError",
    "LoadControlEngine",
    "MeterSpec",
    "Output",
    "PrepaidSettings",
    "PublishAlarm",
    "RecordRound",
    "SendControl",
    "SettingsError",
    "Topology",
    "check_params",
    "default_rounds",
    "parse_limit",
]
