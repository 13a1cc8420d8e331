"""What the daemon's modules load at import (docs/performance.md, Memory): no numba/llvmlite
(about 150 MiB together), no rich and no cryptography (7-9 MiB; Ed25519 is
:mod:`protocols.ed25519` on the interpreter's own libcrypto) in a fresh interpreter that imports the daemon, no DL/T 645
codec, construct or numpy.ma until a gateway needs them, and the DL/T 645 catalogue is generated
only when something uses it. A running daemon whose configuration has no update inbox, no phased
meter and no profile that reads a clock does not import bundle verification, outage analytics or
the meter clock watch either, and its meters of one profile share one read plan. A fresh
interpreter, because this test process has imported everything already."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

_PROBE = """
import json, sys
import gateway.app.daemon
from protocols.dlt645.catalogue import CATALOGUE_1997, CATALOGUE_2007
loaded = sorted({name.split('.')[0] for name in sys.modules})
modules = sorted(name for name in sys.modules if name.startswith(("protocols.dlt645", "numpy.ma",
                 "gateway.acquisition.dlt645", "gateway.control.actuation.dlt645", "gateway.app.bundles",
                 "protocols.bundle")))
before = [CATALOGUE_2007.items._table is None, CATALOGUE_1997.items._table is None]
item = CATALOGUE_2007.lookup(0x00010000)
print(json.dumps({"loaded": loaded, "modules": modules, "ungenerated": before, "item": item.name if item else None,
                  "size": len(CATALOGUE_2007.items)}))
"""


def test_daemon_import_leaves_out_numba_rich_and_the_dlt645_catalogue() -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", _PROBE], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=120, check=True)
    found = json.loads(out.stdout)
    for heavy in ("numba", "llvmlite", "rich", "cryptography"):
        assert heavy not in found["loaded"]
    assert "gateway" in found["loaded"] and "numpy" in found["loaded"]
    # A Modbus-only gateway needs ControlAction, Version and the clock helpers, not the codec:
    # the catalogue module is imported by the probe itself, after the daemon.
    assert "construct" not in found["loaded"]
    assert [m for m in found["modules"] if m.rsplit(".", 1)[-1] in (
        "decoding", "encoding", "transaction", "load_records", "dlt645_bus", "ma")] == []
    # signed update bundles: only a gateway with an [update] inbox_dir imports their code
    assert [m for m in found["modules"] if m.endswith("bundles") or m.endswith(".bundle")] == []
    assert found["ungenerated"] == [True, True]
    # first use generates the whole table
    assert found["item"] == "energy.active.import.total"
    assert found["size"] > 2000


_SIGNING_PROBE = """
import json, sys, tempfile
from pathlib import Path
import gateway.app.daemon
from gateway.control.commands import ResultSigner
from protocols.commands import ChainHead, read_result_topic
from protocols.ed25519 import SigningKey
path = Path(tempfile.mkdtemp()) / "gateway-result.key"
path.write_bytes(SigningKey.generate().to_pkcs8_pem())
signer = ResultSigner.from_pem(path, "gw-1")
message = signer.audit_head_message(topic_prefix="mtr/v1", epoch=1, ts=1_767_225_600_000,
                                    head=ChainHead(3, bytes(32), 1_767_225_600_000), records=3)
payload = message.build(7)
head = read_result_topic(payload, signer.public_key)
maps = open("/proc/self/maps").read()
print(json.dumps({"loaded": sorted(m for m in sys.modules if m.startswith("cryptography")),
                  "mapped": sorted({line.split()[-1] for line in maps.splitlines()
                                    if "/cryptography/" in line}),
                  "libcrypto": sum("libcrypto" in line for line in maps.splitlines()) > 0,
                  "records": head.records}))
"""


def test_the_daemon_signs_its_audit_heads_without_cryptography() -> None:
    """The daemon's result key loaded and an audit head signed and read back, the way the
    running daemon does it: neither ``cryptography`` nor its Rust extension is loaded (its own
    OpenSSL copy is what issue 18 saved); the libcrypto that signs is the one already mapped."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", _SIGNING_PROBE], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120, check=True)
    found = json.loads(out.stdout)
    assert found == {"loaded": [], "mapped": [], "libcrypto": True, "records": 3}


def test_every_public_dlt645_name_has_its_lazy_home() -> None:
    """``protocols.dlt645`` lists its names three times (the typing imports, ``__all__`` and
    the map its lazy ``__getattr__`` uses): a name added to one list only fails here, not in
    the first gateway that asks for it."""
    import protocols.dlt645 as package

    lazy = package._SUBMODULE
    assert set(package.__all__) == set(lazy)
    for name in package.__all__:
        module = importlib.import_module(f"protocols.dlt645.{lazy[name]}")
        assert getattr(package, name) is getattr(module, name), name


#: The daemon run until it logs that it is running (its runtime started), then stopped as systemd
#: would: prints the modules it imported.
_RUN_PROBE = """
import json, logging, os, signal, sys

class Running(logging.Handler):
    def emit(self, record):
        if " running: " in record.getMessage():
            print(json.dumps(sorted(sys.modules)), flush=True)
            os.kill(os.getpid(), signal.SIGTERM)

logging.getLogger("gateway").addHandler(Running())
from gateway.app.cli import main
sys.exit(main(["run", "--config", sys.argv[1]]))
"""


def _modbus_config(tmp_path: Path, meters: int, *, extra: str = "") -> Path:
    """The peer benchmark's shape (one Modbus TCP bus, meters of one profile, no groups,
    areas, [clock], [vee] or [update] section), pointed at closed ports: the daemon starts and
    retries its broker and bus."""
    blocks = "".join(f'\n[[meters]]\nid = "m-{i:03d}"\nbus = "tcp"\naddress = {i}\n'
                     f'profile = "sdm630"\n{extra}' for i in range(1, meters + 1))
    path = tmp_path / "gateway.toml"
    path.write_text(f"""
[gateway]
id = "gw-footprint"
data_dir = "{tmp_path / 'data'}"

[mqtt]
host = "127.0.0.1"
port = 1

[[buses]]
name = "tcp"
protocol = "modbus-tcp"
host = "127.0.0.1"
port = 1
{blocks}""")
    return path


def test_a_running_modbus_daemon_leaves_out_features_its_config_does_not_use(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", _RUN_PROBE, str(_modbus_config(tmp_path, 3))],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert out.stdout.strip(), out.stderr[-2000:]
    loaded = set(json.loads(out.stdout.splitlines()[0]))
    assert "gateway.pipeline.vee_stage" in loaded and "gateway.analytics.theft" in loaded  # on by default
    unused = {"gateway.app.bundles", "protocols.bundle",  # no [update] inbox_dir
              "gateway.analytics.outages",  # no meter has a phase
              "gateway.control.meter_clock", "gateway.control.meter_clock.runner",  # sdm630: no clock
              "gateway.control.load_control", "gateway.analytics.groups", "gateway.analytics.areas"}
    assert sorted(unused & loaded) == []


def test_meters_of_one_profile_share_one_read_plan(tmp_path: Path) -> None:
    import asyncio

    from gateway.acquisition.factory import build_buses
    from gateway.acquisition.modbus_bus import ModbusMeter
    from gateway.config import load_config
    from protocols.modbus.register_map import plan_reads

    buses = build_buses(load_config(_modbus_config(tmp_path, 3)), asyncio.Queue())
    meters = buses[0].meters
    assert all(isinstance(m, ModbusMeter) for m in meters) and len(meters) == 3
    assert meters[0].blocks is meters[1].blocks is meters[2].blocks
    assert meters[0].blocks == plan_reads(meters[0].profile)
