#!/bin/bash
# fetch.sh — get everything the real-Xen tier needs from Debian.
#
#  * host tool: qemu-system-x86 is apt-get installed (only if qemu-system-x86_64 is missing).
#  * guest content: the Xen hypervisor, the Xen userland and its libraries, xenstore-utils, the dom0 kernel
#    and busybox-static are fetched with `apt-get download` and unpacked with `dpkg-deb -x` into
#    $XT_SYSROOT. They are never installed: no initramfs triggers, no services, no grub hooks.
#
# Idempotent: a stamp file records the package set; a second run with the same set does nothing.
set -euo pipefail
. "$(dirname "$0")/common.sh"

# The Xen library closure is computed from apt's own dependency data (xen-utils-4.17 pulls libxenmisc,
# which pulls the rest), so it follows whatever point release Debian ships.
# qemu-system-xen: QEMU's Xen device model, for the bench group's qdisk disk (make xen-bench), and from
# qemu-system-data the keymap it loads even with `-vnc none`; its other libraries (glib, pixman, spice...) come
# from the host's qemu-system-x86, which depends on the same ones.
ROOTS=("xen-hypervisor-$XT_XENVER-amd64" "xen-utils-$XT_XENVER" xen-utils-common xenstore-utils
       busybox-static linux-image-amd64 qemu-system-xen qemu-system-data)

apt_lock=(-o DPkg::Lock::Timeout=600)

# --- host: QEMU --------------------------------------------------------------------------------------
if ! command -v qemu-system-x86_64 >/dev/null; then
    xt_log "installing qemu-system-x86 (host tool)"
    xt_sudo timeout 900 apt-get "${apt_lock[@]}" update -qq
    DEBIAN_FRONTEND=noninteractive xt_sudo timeout 900 apt-get "${apt_lock[@]}" install -y -qq \
        --no-install-recommends qemu-system-x86 >/dev/null
fi
for tool in dpkg-deb gzip strip; do command -v $tool >/dev/null || xt_die "$tool missing (make setup installs it)"; done

# --- guest: resolve the package set --------------------------------------------------------------------
# linux-image-amd64 is a metapackage: follow it to the versioned image. The Xen userland needs the
# libxen* / libyajl libraries; everything else it links (glibc, ncurses, zlib...) is copied from the host
# by the initramfs step, which keeps the download small.
resolve() {
    local pkgs=() p
    for p in "${ROOTS[@]}"; do pkgs+=("$p"); done
    pkgs+=($(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2}'))
    pkgs+=($(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
                 --no-replaces --no-enhances "xen-utils-$XT_XENVER" 2>/dev/null \
             | grep -E '^(libxen|libyajl)' | sort -u))
    printf '%s\n' "${pkgs[@]}" | sort -u
}
if ! apt-cache show "xen-utils-$XT_XENVER" >/dev/null 2>&1; then
    xt_log "apt lists lack xen-utils-$XT_XENVER: apt-get update"
    xt_sudo timeout 900 apt-get "${apt_lock[@]}" update -qq
fi
mapfile -t PKGS < <(resolve)
grep -q '^linux-image-[0-9]' <(printf '%s\n' "${PKGS[@]}") || xt_die "cannot resolve linux-image-amd64"

# Stamp = the exact package versions; unchanged stamp = nothing to do.
STAMP=$(apt-cache policy "${PKGS[@]}" | awk '/^[^ ]/ {p = $1} /Candidate:/ {print p $2}')
if [ -f "$XT_SYSROOT/.stamp" ] && [ "$(cat "$XT_SYSROOT/.stamp")" = "$STAMP" ]; then
    xt_log "guest packages already unpacked (${#PKGS[@]} packages)"
    exit 0
fi

# --- guest: download and unpack ------------------------------------------------------------------------
mkdir -p "$XT_DEBS"
xt_log "downloading ${#PKGS[@]} packages: ${PKGS[*]}"
# apt-get download writes into the current directory; as root it drops privileges to _apt, which needs
# write access there.
chmod 0777 "$XT_DEBS" 2>/dev/null || true
(cd "$XT_DEBS" && timeout 900 apt-get "${apt_lock[@]}" download -q "${PKGS[@]}" >/dev/null)
rm -rf "$XT_SYSROOT.tmp"
mkdir -p "$XT_SYSROOT.tmp"
for p in "${PKGS[@]}"; do
    deb=$(ls -t "$XT_DEBS/${p}_"*.deb 2>/dev/null | head -1)
    [ -n "$deb" ] || xt_die "download of $p produced no .deb"
    timeout 300 dpkg-deb -x "$deb" "$XT_SYSROOT.tmp"
done
echo "$STAMP" > "$XT_SYSROOT.tmp/.stamp"
rm -rf "$XT_SYSROOT"
mv "$XT_SYSROOT.tmp" "$XT_SYSROOT"
xt_log "unpacked into $XT_SYSROOT ($(du -sh "$XT_SYSROOT" | cut -f1))"
