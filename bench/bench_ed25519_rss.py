"""What loading one Ed25519 key and signing once costs in RSS: protocols.ed25519 vs cryptography.

    .venv/bin/python bench/bench_ed25519_rss.py [--repeat N]

Each run is a fresh interpreter that first imports ``ssl`` and ``hashlib`` — the daemon's
situation: paho imports ``ssl``, which maps the system libcrypto, and the store and audit chain
use ``hashlib`` — then reads VmRSS, loads a PKCS#8 PEM key with one
backend, signs 32 bytes once, and reads VmRSS again. The difference is what that backend adds to
the daemon (issue 18); the table shows the median of ``--repeat`` runs.

The children write and use compiled bytecode (in a temporary ``PYTHONPYCACHEPREFIX``, after one
discarded warm-up run), as an installed package does: compiling ``protocols/ed25519.py`` from
source would add about 1.2 MiB of parser memory that no installed daemon pays, while
``cryptography`` in site-packages is already compiled.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.daemon_rig import REPO, command_line, note_start

_PEM = ("-----BEGIN PRIVATE KEY-----\\n"
        "MC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\\n"
        "-----END PRIVATE KEY-----\\n")

_LOAD_AND_SIGN = {
    "protocols.ed25519": (
        "from protocols.ed25519 import load_pkcs8_pem\n"
        f"signature = load_pkcs8_pem(b'{_PEM}').sign(bytes(32))\n"
    ),
    "cryptography": (
        "from cryptography.hazmat.primitives.serialization import load_pem_private_key\n"
        f"signature = load_pem_private_key(b'{_PEM}', password=None).sign(bytes(32))\n"
    ),
}

_PROBE = """
import hashlib, ssl
def rss():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS:'):
            return int(line.split()[1])
    return 0
before = rss()
{code}
assert len(signature) == 64
print(before, rss())
"""


def probe(code: str, env: dict[str, str]) -> tuple[int, int]:
    """(RSS KiB after ``import hashlib, ssl``, RSS KiB after loading the key and signing once)."""
    out = subprocess.run([sys.executable, "-c", _PROBE.format(code=code)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120, check=True)
    before, after = out.stdout.split()
    return int(before), int(after)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per backend; median shown")
    args = parser.parse_args(argv)
    print(note_start())
    print(f"command: {command_line()}")
    print("| backend | RSS after `import hashlib, ssl` (MiB) | added by load key + sign once (MiB) |")
    print("|---|---|---|")
    cache = tempfile.TemporaryDirectory(prefix="bench-ed25519-pyc-")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = cache.name
    for name, code in _LOAD_AND_SIGN.items():
        probe(code, env)  # warm-up: writes the bytecode
        runs = [probe(code, env) for _ in range(args.repeat)]
        before = statistics.median(b for b, _ in runs) / 1024
        added = statistics.median(a - b for b, a in runs) / 1024
        print(f"| `{name}` | {before:.1f} | {added:.1f} |")
    cache.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
