"""``gwtool bundle build | sign | verify`` as a field engineer runs it (a subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def gwtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "firmware_tools.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


def test_build_sign_verify_and_refusals(tmp_path: Path) -> None:
    (tmp_path / "gateway.toml").write_text('[gateway]\nid = "gw-1"\n')
    (tmp_path / "site.toml").write_text('kind = "dlt645"\n')
    keygen = gwtool("keygen", "--out", "eng", cwd=tmp_path)
    assert keygen.returncode == 0, keygen.stderr
    pub = (tmp_path / "eng.pub").read_text().strip()
    built = gwtool("bundle", "build", "--seq", "7", "--gateway", "gw-1", "--config",
                   "gateway.toml", "--profile", "site.toml", "--out", "b.bundle", cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    unsigned = gwtool("bundle", "verify", "b.bundle", "--pub", f"eng={pub}", cwd=tmp_path)
    assert unsigned.returncode == 1 and "(unsigned)" in unsigned.stderr, unsigned.stderr
    assert "Traceback" not in unsigned.stderr and unsigned.stderr.count("\n") == 1
    signed = gwtool("bundle", "sign", "b.bundle", "--key", "eng.key", "--kid", "eng",
                    cwd=tmp_path)
    assert signed.returncode == 0, signed.stderr
    ok = gwtool("bundle", "verify", "b.bundle", "--pub", f"eng={pub}", "--gateway", "gw-1",
                "--last-seq", "6", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert '"seq": 7' in ok.stdout and '"site.toml"' in ok.stdout
    for args, code in ((["--gateway", "gw-2"], "wrong_gateway"),
                       (["--last-seq", "7"], "stale_seq")):
        out = gwtool("bundle", "verify", "b.bundle", "--pub", f"eng={pub}", *args, cwd=tmp_path)
        assert out.returncode == 1 and f"({code})" in out.stderr, out.stderr
    bad_path = gwtool("bundle", "build", "--seq", "1", "--gateway", "gw-1", "--config",
                      "nope.toml", "--out", "x.bundle", cwd=tmp_path)
    assert bad_path.returncode == 1 and "nope.toml" in bad_path.stderr
    assert "Traceback" not in bad_path.stderr
