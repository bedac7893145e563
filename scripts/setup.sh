#!/bin/sh
# One-time set-up, run by `make setup` (and so by `make test` / `make demo` on first use):
# Debian packages when missing, a .venv with the pinned host packages, the device dependency
# umqtt.simple fetched from the package index and checked by sha256.
set -eu
cd "$(dirname "$0")/.."

need_apt=""
# gcc + mosquitto headers build the stand-in's identity plugin (host_tools/upcert/plugin).
# haproxy: the stand-in's port-443 listener, routing on the ClientHello's ALPN (cloud/alpn.py).
# postgresql: the tests start a throwaway server for the shared batch inventory (never the
# system service).
for pair in mosquitto:/usr/sbin/mosquitto haproxy:/usr/sbin/haproxy openssl:/usr/bin/openssl \
        gcc:/usr/bin/gcc \
        mosquitto-dev:/usr/include/mosquitto_broker.h libmosquitto-dev:/usr/include/mosquitto.h \
        libssl-dev:/usr/include/openssl/ssl.h postgresql:/usr/lib/postgresql; do
    pkg=${pair%%:*}; path=${pair#*:}
    [ -e "$path" ] || need_apt="$need_apt $pkg"
done
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt="$need_apt python3-venv"
if [ -n "$need_apt" ]; then
    echo "setup: installing Debian packages:$need_apt"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $need_apt >/dev/null
fi
# The broker is started by our own tools, never as a system service.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet mosquitto 2>/dev/null; then
    echo "setup: note: a system mosquitto service is running; upcert uses its own instances"
fi

stamp=.venv/.upcert-setup
if [ ! -f "$stamp" ] || [ host_tools/requirements.txt -nt "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "setup: creating .venv with pinned host packages"
    [ -x .venv/bin/python ] || python3 -m venv .venv
    .venv/bin/pip install -q --disable-pip-version-check -r host_tools/requirements.txt 2>&1 \
        | grep -v "is ignored: it is neither" || true
    .venv/bin/pip install -q --disable-pip-version-check --no-deps -e . 2>&1 \
        | grep -v "is ignored: it is neither" || true
    .venv/bin/python -c "import upcert, cryptography, paho.mqtt, littlefs, mpremote, boto3, moto, certifi"
    .venv/bin/micropython -c "import tls, vfs" 
    touch "$stamp"
fi
.venv/bin/python -m upcert.board.deps .build/deps
