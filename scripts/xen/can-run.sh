#!/bin/bash
# can-run.sh — can the real-Xen tier run on this machine? Exit 0 if yes; otherwise print why and exit 1.
# `make test` runs the tier when this says yes, and always when CI=true (CI must not skip silently).
# Needs: an x86-64 Linux host (QEMU TCG emulates an x86-64 machine fast enough only on one), 1.5 GiB of
# available memory (QEMU gets 1 GiB), and either QEMU already installed or apt plus root/sudo to get it
# and the Xen packages. Set XEN_TEST=0 to skip or XEN_TEST=1 to force.
set -uo pipefail
no() { echo "xen-test skipped: $*"; exit 1; }
case "${XEN_TEST:-auto}" in
    0|no|off) no "XEN_TEST=${XEN_TEST}" ;;
    1|yes|on) exit 0 ;;
esac
[ "$(uname -s)/$(uname -m)" = Linux/x86_64 ] || no "not an x86-64 Linux host"
avail=$(awk '/^MemAvailable:/ {print int($2 / 1024)}' /proc/meminfo 2>/dev/null || echo 0)
[ "$avail" -ge 1536 ] || no "only ${avail} MiB of memory available"
command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null || no "not a Debian host (apt-get, dpkg-deb)"
if [ "$(id -u)" -ne 0 ] && ! sudo -n true 2>/dev/null; then
    command -v qemu-system-x86_64 >/dev/null || no "qemu-system-x86_64 missing and no root/sudo to install it"
fi
# With apt lists present, they must know Xen 4.17 (Debian 12); without lists, fetch.sh updates them.
if compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
    apt-cache show xen-hypervisor-4.17-amd64 >/dev/null 2>&1 || no "apt knows no Xen 4.17 (not Debian 12?)"
fi
exit 0
