"""Switching and restoring a bundle's files (gateway/app/bundle_files.py), including the start
after a crash in the middle of a switch."""

from __future__ import annotations

from pathlib import Path

from gateway.app.bundle_files import MARKER, FileSwitch, recover_switch


def _setup(tmp_path: Path) -> tuple[Path, Path, Path]:
    config = tmp_path / "gateway.toml"
    config.write_bytes(b"old config")
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "kept.toml").write_bytes(b"old profile")
    return config, profiles / "kept.toml", profiles / "added.toml"


def test_switch_then_restore_puts_everything_back(tmp_path: Path) -> None:
    config, kept, added = _setup(tmp_path)
    switch = FileSwitch.plan(config, [(config, b"new config"), (kept, b"new profile"),
                                      (added, b"added profile")])
    switch.switch()
    assert (config.read_bytes(), kept.read_bytes(), added.read_bytes()) == (
        b"new config", b"new profile", b"added profile")
    assert (tmp_path / MARKER).exists()
    switch.restore()
    assert (config.read_bytes(), kept.read_bytes()) == (b"old config", b"old profile")
    assert not added.exists() and not (tmp_path / MARKER).exists()
    assert not list(tmp_path.rglob("*.rollback"))


def test_commit_keeps_the_new_files(tmp_path: Path) -> None:
    config, kept, added = _setup(tmp_path)
    switch = FileSwitch.plan(config, [(config, b"new config"), (added, b"added")])
    switch.switch()
    switch.commit()
    assert config.read_bytes() == b"new config" and added.read_bytes() == b"added"
    assert not (tmp_path / MARKER).exists() and not list(tmp_path.rglob("*.rollback"))
    assert recover_switch(tmp_path / MARKER) is False


def test_a_start_after_a_crash_mid_switch_restores(tmp_path: Path) -> None:
    config, kept, added = _setup(tmp_path)
    switch = FileSwitch.plan(config, [(config, b"new config"), (kept, b"new profile")])
    switch.switch()
    # The process dies here (no restore, no commit); the next start calls recover_switch.
    assert recover_switch(tmp_path / MARKER) is True
    assert (config.read_bytes(), kept.read_bytes()) == (b"old config", b"old profile")
    assert not (tmp_path / MARKER).exists()


def test_unreadable_marker_is_reported_not_raised(tmp_path: Path) -> None:
    (tmp_path / MARKER).write_bytes(b"{not json")
    assert recover_switch(tmp_path / MARKER) is False


def test_marker_of_the_wrong_shape_is_reported_not_raised(tmp_path: Path) -> None:
    (tmp_path / MARKER).write_bytes(b'[{"path": 3}]')
    assert recover_switch(tmp_path / MARKER) is False


def test_a_switch_the_filesystem_refuses_changes_nothing(tmp_path: Path) -> None:
    config, kept, added = _setup(tmp_path)
    blocker = tmp_path / "profiles" / "added.toml"
    blocker.mkdir()  # the new file cannot be written: an OSError half-way through the switch
    switch = FileSwitch.plan(config, [(config, b"new config"), (blocker, b"added")])
    try:
        switch.switch()
    except OSError:
        pass
    else:
        raise AssertionError("the switch should have failed")
    assert config.read_bytes() == b"old config"
    assert not (tmp_path / MARKER).exists() and not list(tmp_path.rglob("*.rollback"))
