# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck fuzz slow bench clean wheels install aot aot-record

# The rig (simulators, demo: hil_tests) is its own distribution, edge-gateway-rig (rig/); the
# development venv gets both, editable.
$(STAMP): pyproject.toml rig/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]' -e ./rig
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/edge-gateway demo $(DEMO_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports --no-cache

typecheck: $(STAMP)
	$(VENV)/bin/mypy protocols edge_rules gateway firmware_tools central

# Two workers: most end-to-end tests wait on wire timing and the broker, not the CPU (measured:
# 597 s with one process, 360 s with two, on the 2-core CI machine).
test: $(STAMP) lint typecheck
	$(PY) -m pytest -q -n 2

fuzz: $(STAMP)
	$(PY) -m pytest -q -m slow tests/test_dlt645_fuzz.py

slow: $(STAMP)
	$(PY) -m pytest -q -m slow

bench: $(STAMP)
	$(PY) bench/run_all.py

# The rule kernels compiled ahead of time (edge_rules/aot.py, docs/performance.md): numba's machine
# code in a plain extension module, so the daemon never imports numba (about 150 MB of RSS). Built
# in place for the development venv; `make install` builds it in the installed venv. `aot-record`
# re-records the kernels' signatures from their tests after a kernel changed.
aot: $(STAMP)
	$(PY) -m edge_rules.aot_build build

aot-record: $(STAMP)
	$(PY) -m edge_rules.aot_build record

# --- installing on a gateway (docs/install.md) --------------------------------------------------
# `make wheels` builds dist/edge_gateway-*.whl (the daemon and gwtool) and
# dist/edge_gateway_rig-*.whl (the rig, for `pip install --find-links dist 'edge-gateway[rig]'`).
# `sudo make install` puts a venv with the wheel in $(PREFIX), the systemd unit (ExecStart in that
# venv), sysusers.d and tmpfiles.d entries and an example config. DESTDIR stages the same tree
# elsewhere (for a package build): the venv's scripts name $(PREFIX), where the tree will live.
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
WHEEL := dist/edge_gateway-$(VERSION)-py3-none-any.whl
PREFIX ?= /opt/edge-gateway
DESTDIR ?=
SYSCONFDIR ?= /etc
UNITDIR ?= /usr/lib/systemd/system
SYSUSERSDIR ?= /usr/lib/sysusers.d
TMPFILESDIR ?= /usr/lib/tmpfiles.d
INSTALL_VENV := $(DESTDIR)$(PREFIX)/venv

wheels:
	rm -rf dist
	$(PYTHON) -m pip wheel -q --no-deps -w dist . ./rig

install: wheels
	$(PYTHON) -m venv --clear $(INSTALL_VENV)
ifeq ($(NUMBA),no)
	# Without numba (a 32-bit userland under a 64-bit kernel, where the wheel's marker sees
	# aarch64): the wheel, then its other dependencies (docs/install.md).
	$(INSTALL_VENV)/bin/python -m pip install -q $(PIP_INSTALL_ARGS) --no-deps $(WHEEL)
	$(INSTALL_VENV)/bin/python -c "import importlib.metadata as m; print('\n'.join(r for r in m.requires('edge-gateway') if not r.startswith('numba') and 'extra ==' not in r))" > $(INSTALL_VENV)/requirements-without-numba.txt
	$(INSTALL_VENV)/bin/python -m pip install -q $(PIP_INSTALL_ARGS) -r $(INSTALL_VENV)/requirements-without-numba.txt
else
	$(INSTALL_VENV)/bin/python -m pip install -q $(PIP_INSTALL_ARGS) $(WHEEL)
ifneq ($(AOT),no)
	# The kernels compiled for this machine, into the installed package (edge_rules/aot.py):
	# minutes here instead of at the first start, and no numba in the daemon's memory. It needs a
	# C compiler and the Python headers (gcc, python3-dev); without them the install goes on and
	# the daemon JIT-compiles, as before. AOT=no skips it (tests/test_install.py saves the minutes).
	$(INSTALL_VENV)/bin/python -m edge_rules.aot_build build --out \
		"$$($(INSTALL_VENV)/bin/python -c 'import edge_rules, os; print(os.path.dirname(edge_rules.__file__))')" \
		|| echo "warning: the kernels were not compiled ahead of time; the daemon will JIT-compile them (docs/performance.md)"
endif
endif
	# Staged under DESTDIR: point the scripts and activate files at the final place.
	if [ -n "$(DESTDIR)" ]; then \
		grep -rlI -- "$(INSTALL_VENV)" $(INSTALL_VENV)/bin $(INSTALL_VENV)/pyvenv.cfg \
			| xargs -r sed -i "s|$(INSTALL_VENV)|$(PREFIX)/venv|g"; \
	fi
	install -d $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)$(TMPFILESDIR)
	sed "s|/opt/edge-gateway/venv|$(PREFIX)/venv|g; s|/etc/edge-gateway|$(SYSCONFDIR)/edge-gateway|g" \
		systemd/edge-gateway.service > $(DESTDIR)$(UNITDIR)/edge-gateway.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/edge-gateway.service
	install -m 0644 systemd/edge-gateway.sysusers $(DESTDIR)$(SYSUSERSDIR)/edge-gateway.conf
	sed "s|/etc/edge-gateway|$(SYSCONFDIR)/edge-gateway|g" systemd/edge-gateway.tmpfiles \
		> $(DESTDIR)$(TMPFILESDIR)/edge-gateway.conf
	install -d -m 0750 $(DESTDIR)$(SYSCONFDIR)/edge-gateway $(DESTDIR)$(SYSCONFDIR)/edge-gateway/profiles
	install -m 0640 configs/example.toml $(DESTDIR)$(SYSCONFDIR)/edge-gateway/gateway.toml.example
	@echo "installed in $(DESTDIR)$(PREFIX); next steps: docs/install.md"

clean:
	rm -rf $(VENV) var dist build .pytest_cache .mypy_cache .ruff_cache
