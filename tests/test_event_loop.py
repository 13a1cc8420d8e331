"""``[gateway] event_loop``: the daemon runs on uvloop or on asyncio's own loop with the same
results, says which in its health message, and refuses a loop it cannot have."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.app import event_loop
from tests.broker import Observer
from tests.gateway_rig import decoded, gateway_rig, reads_by_meter, wait_until


def _config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "gw.toml"
    path.write_text(body)
    return path


def test_the_choice_is_read_from_the_gateway_table(tmp_path: Path) -> None:
    assert event_loop.configured_choice(_config(tmp_path, '[gateway]\nevent_loop = "asyncio"\n')) == "asyncio"
    assert event_loop.configured_choice(_config(tmp_path, '[gateway]\nevent_loop = "uvloop"\n')) == "uvloop"
    assert event_loop.configured_choice(_config(tmp_path, '[gateway]\nid = "g"\n')) == "auto"
    # Unusable files and values fall back to auto; the daemon's validation reports them (exit 2).
    assert event_loop.configured_choice(_config(tmp_path, '[gateway]\nevent_loop = "tokio"\n')) == "auto"
    assert event_loop.configured_choice(_config(tmp_path, "[gateway\n")) == "auto"
    assert event_loop.configured_choice(tmp_path / "missing.toml") == "auto"


def test_auto_falls_back_and_an_explicit_uvloop_is_refused_without_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert event_loop.resolve("asyncio") == "asyncio"
    monkeypatch.setattr(event_loop, "uvloop_available", lambda: False)
    assert event_loop.resolve("auto") == "asyncio"
    with pytest.raises(event_loop.EventLoopUnavailable, match='event_loop = "auto"'):
        event_loop.resolve("uvloop")


def test_a_bad_event_loop_value_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    path = _config(tmp_path, '[gateway]\nid = "g"\ndata_dir = "var"\nevent_loop = "tokio"\n')
    proc = subprocess.run([sys.executable, "-m", "gateway.app.cli", "check-config", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "gateway.event_loop" in proc.stdout + proc.stderr


@pytest.mark.parametrize("choice", ["asyncio", "auto"])
def test_the_daemon_polls_and_publishes_on_either_loop(tmp_path: Path, choice: str) -> None:
    expected = event_loop.resolve(choice)
    with gateway_rig(tmp_path, dlt645_buses=1, meters_per_bus=2, modbus_meters=1) as rig:
        assert rig.config_path is not None
        text = rig.config_path.read_text()
        rig.config_path.write_text(text.replace("health_interval_s = 2",
                                                f'health_interval_s = 2\nevent_loop = "{choice}"', 1))
        with Observer(rig.broker, "mtr/v1/#", client_id=f"loop-{choice}") as observer:
            rig.start_daemon()
            assert wait_until(lambda: len(reads_by_meter(observer, rig)) == 3, 30), rig.log_text()[-2000:]
            assert wait_until(lambda: decoded(observer, rig.topic("health")), 15)
            health = decoded(observer, rig.topic("health"))[-1][1]
            assert health["stats"]["event_loop"] == expected
            assert f"{expected} event loop" in rig.log_text()
            assert rig.stop_daemon() == 0
