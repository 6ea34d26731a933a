# Shared settings for the real-Xen test tier (sourced by the scripts in scripts/xen/).
# Everything lives under $XT_DIR (default .build-xen in the package root): downloaded .debs, the unpacked
# guest tree, the Swift scratch path, the initramfs and the console logs. Nothing is installed into the host
# except QEMU (a host tool); the hypervisor, the dom0 kernel and the dom0 userland are only unpacked.

XT_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
XT_DIR=${XT_DIR:-$XT_ROOT/.build-xen}
XT_DEBS=$XT_DIR/debs          # apt-get download cache
XT_SYSROOT=$XT_DIR/sysroot    # every guest package unpacked with dpkg-deb -x
XT_OUT=$XT_DIR/out            # xen.elf, vmlinuz, initrd.img, console logs
XT_XENVER=4.17

xt_log() { echo "[xen-test] $*" >&2; }
xt_die() { echo "[xen-test] ERROR: $*" >&2; exit 1; }

# xt_sudo CMD...: run as root (directly, or through sudo when not root).
xt_sudo() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi
}

# xt_now: seconds since the epoch with fractions, for phase timings.
xt_now() { date +%s.%N; }
xt_since() { awk -v s="$1" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }'; }
