"""A data_dir that cannot be used ends ``edge-gateway run`` with one line naming the file and
what to fix, exit code 1 — no traceback, and never "stopped cleanly" (issue 12, item 8).

Read-only filesystems are real: a small tmpfs remounted read-only (skipped, with the reason
printed, where mounting is not permitted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.store import Store
from tests.readonly_fs import remount_readonly, small_tmpfs

REPO = Path(__file__).resolve().parent.parent
MINIMAL = (REPO / "configs" / "minimal.toml").read_text()


def _config(tmp_path: Path, data_dir: Path) -> Path:
    text = (MINIMAL.replace('"../var"', f'"{data_dir}"')
            .replace('host = "127.0.0.1"', 'host = "127.0.0.1"\nport = 1')  # nothing listens
            .replace("/dev/ttyUSB0", "/dev/ttyNOSUCH"))
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


def _run_gateway(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.app.cli", "run", "--config", str(config)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)


def _assert_one_line_failure(done: subprocess.CompletedProcess[str], names: Path) -> str:
    """Exit 1, exactly one error line on stderr naming ``names``; no traceback, no clean stop."""
    print(done.stderr)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and "stopped cleanly" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if " ERROR " in line or "CRITICAL" in line]
    assert len(errors) == 1, done.stderr
    (line,) = errors
    assert "cannot start" in line and str(names) in line, line
    return line


def test_read_only_data_dir(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "mnt") as mnt:
        remount_readonly(mnt)
        line = _assert_one_line_failure(_run_gateway(_config(tmp_path, mnt)), mnt)
        assert "writable" in line and "read-write" in line


def test_read_only_data_dir_with_an_existing_store(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "mnt") as mnt:
        Store.open(mnt / "gateway.sqlite").close()
        remount_readonly(mnt)
        line = _assert_one_line_failure(_run_gateway(_config(tmp_path, mnt)),
                                        mnt / "gateway.sqlite")
        assert "writable" in line
        assert (mnt / "gateway.sqlite").exists()  # left alone, not moved aside


def test_missing_data_dir_under_a_read_only_parent(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "mnt") as mnt:
        remount_readonly(mnt)
        data_dir = mnt / "var" / "gateway"
        line = _assert_one_line_failure(_run_gateway(_config(tmp_path, data_dir)), data_dir)
        assert "cannot create the data_dir" in line and "Read-only file system" in line


def test_garbage_audit_journal(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    data_dir.mkdir()
    garbage = b"\x13not an audit journal\x00" * 400
    (data_dir / "audit.db").write_bytes(garbage)
    line = _assert_one_line_failure(_run_gateway(_config(tmp_path, data_dir)),
                                    data_dir / "audit.db")
    assert "restore it from a backup" in line
    assert (data_dir / "audit.db").read_bytes() == garbage  # the audit trail is never replaced


def test_unreadable_result_key(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    (data_dir / "gateway-result.key").mkdir(parents=True)  # there, but not a file to read
    line = _assert_one_line_failure(_run_gateway(_config(tmp_path, data_dir)),
                                    data_dir / "gateway-result.key")
    assert "cannot be read" in line
    assert not (data_dir / "audit.db").exists()  # the key is checked before the journal opens


def test_damaged_result_key(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    data_dir.mkdir()
    (data_dir / "gateway-result.key").write_text("not a PEM key\n")
    line = _assert_one_line_failure(_run_gateway(_config(tmp_path, data_dir)),
                                    data_dir / "gateway-result.key")
    assert "Ed25519" in line


def test_no_libcrypto_to_sign_with_is_a_result_key_error(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a usable libcrypto the gateway cannot sign results: GatewayKeyError, the start
    error the daemon reports in one line, not a traceback from deep inside the signer."""
    from gateway.config.loader import load_config
    from gateway.control.commands.handler import GatewayKeyError, load_result_signer
    from protocols import ed25519

    def no_library() -> None:
        raise ed25519.BackendError("no libcrypto found: Ed25519 needs OpenSSL 1.1.1 or later")

    monkeypatch.setattr(ed25519, "_lib", no_library)
    config = load_config(_config(tmp_path, tmp_path / "var"))
    with pytest.raises(GatewayKeyError, match="cannot sign command results: no libcrypto found"):
        load_result_signer(config)
