#!/usr/bin/env bash
# Install everything the test suite and benchmarks need on a fresh Debian machine.
# Idempotent: re-running it on a provisioned machine does no network access.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# Debian packages. postfix is only used for its smtp-sink/smtp-source tools and
# for throwaway private instances in benches/; the system instance stays off.
# libnet-ssleay-perl: swaks needs it for --tls/--tls-on-connect (only a Recommends).
# clamav-daemon: the tests run its clamd in the foreground with their own config and
# signature database; the package's services stay off. zip: the scanning tests zip EICAR.
# nsd: an independent authoritative DNS server that loads `domain records` zones.
APT_PACKAGES=(swaks libnet-ssleay-perl postfix dnsutils sqlite3 openssl procps clamav-daemon zip nsd)

# Python packages for the venv at .venv: dkimpy (with pynacl for Ed25519) is
# the independent DKIM verifier, dnspython its resolver. moto[server] is the
# AWS peer (SES, SQS, S3) of the AWS adapter's tests; boto3 puts their test
# data into it.
PIP_PACKAGES=(dkimpy dnspython pynacl "moto[server]" boto3)

log() { echo "install-deps: $*" >&2; }
die() { echo "install-deps: ERROR: $*" >&2; exit 1; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "must run as root (or have sudo)"
    SUDO="sudo"
fi

pkg_installed() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]
}

install_apt() {
    local missing=() p
    # The venv needs the stdlib venv+ensurepip modules; Debian's python3 splits them out.
    if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
        pkg_installed python3-venv || missing+=(python3-venv)
    fi
    for p in "${APT_PACKAGES[@]}"; do
        pkg_installed "$p" || missing+=("$p")
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        log "apt packages already installed"
        return
    fi
    log "installing: ${missing[*]}"
    # Preseed so postfix installs without a prompt and without writing /etc/postfix/main.cf
    # (no main.cf => the system instance cannot start, even via its init script).
    echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -q
    $SUDO ${SUDO:+-E} apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
}

# Make sure the system Postfix is neither running nor enabled: we never want port 25.
disable_system_postfix() {
    pkg_installed postfix || return 0
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
        $SUDO systemctl disable --now postfix.service >/dev/null 2>&1 || true
    else
        if [ -x /etc/init.d/postfix ]; then
            $SUDO /etc/init.d/postfix stop >/dev/null 2>&1 || true
        fi
        if command -v update-rc.d >/dev/null 2>&1; then
            $SUDO update-rc.d postfix disable >/dev/null 2>&1 || true
        fi
    fi
    # Belt and braces: if a default-config master is still up, stop it.
    if [ -f /etc/postfix/main.cf ] && /usr/sbin/postfix status >/dev/null 2>&1; then
        $SUDO /usr/sbin/postfix stop >/dev/null 2>&1 || true
    fi
}

# The tests start their own clamd; the system one (and freshclam, which would try to
# download signatures) must neither run nor start at boot.
disable_system_clamav() {
    pkg_installed clamav-daemon || return 0
    local unit
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
        for unit in clamav-daemon.socket clamav-daemon.service clamav-freshclam.service; do
            $SUDO systemctl disable --now "$unit" >/dev/null 2>&1 || true
        done
    else
        for unit in clamav-daemon clamav-freshclam; do
            if [ -x "/etc/init.d/$unit" ]; then
                $SUDO "/etc/init.d/$unit" stop >/dev/null 2>&1 || true
            fi
            if command -v update-rc.d >/dev/null 2>&1; then
                $SUDO update-rc.d "$unit" disable >/dev/null 2>&1 || true
            fi
        done
    fi
}

# The tests start nsd on their own port with their own zones; the system
# instance (port 53) must neither run nor start at boot.
disable_system_nsd() {
    pkg_installed nsd || return 0
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
        $SUDO systemctl disable --now nsd.service >/dev/null 2>&1 || true
    else
        [ -x /etc/init.d/nsd ] && { $SUDO /etc/init.d/nsd stop >/dev/null 2>&1 || true; }
        if command -v update-rc.d >/dev/null 2>&1; then
            $SUDO update-rc.d nsd disable >/dev/null 2>&1 || true
        fi
    fi
}

# True if anything is listening on TCP port 25 (reads /proc, no extra tools needed).
port25_listening() {
    # local_address is HEX_IP:HEX_PORT, st 0A = LISTEN; port 25 = 0x0019.
    awk 'NR > 1 && $4 == "0A" && $2 ~ /:0019$/ { found = 1 } END { exit !found }' \
        /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

setup_venv() {
    if [ ! -x .venv/bin/python ]; then
        log "creating Python venv at .venv"
        python3 -m venv .venv
    fi
    if [ "${#PIP_PACKAGES[@]}" -gt 0 ]; then
        # pip is a no-op (no download) when the requirements are already satisfied.
        .venv/bin/python -m pip install -q --disable-pip-version-check "${PIP_PACKAGES[@]}"
    fi
}

check_tools() {
    # smtp-source/smtp-sink/postfix live in /usr/sbin, which a non-login shell may lack.
    case ":$PATH:" in *:/usr/sbin:*) ;; *) export PATH="$PATH:/usr/sbin:/sbin" ;; esac
    local t
    for t in swaks smtp-source smtp-sink postfix postconf sqlite3 openssl dig pgrep clamd zip nsd nsd-checkzone; do
        command -v "$t" >/dev/null 2>&1 \
            || die "'$t' not found on PATH ($PATH) after install; check the apt output above"
    done
}

install_apt
disable_system_postfix
disable_system_clamav
disable_system_nsd
check_tools
if port25_listening; then
    die "something is listening on TCP port 25; the system MTA must not run (see 'ss -ltnp')"
fi
setup_venv
log "ok"
