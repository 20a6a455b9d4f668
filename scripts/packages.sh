# Sourced by scripts/test.sh and image/build.sh: ensure_packages PKG...
# installs the Debian packages that are missing. Postfix comes without a
# system configuration, and no package's service may start while they
# install (policy-rc.d): tests start their own instances, on loopback only.
ensure_packages() {
    local sudo="" missing=() p guard=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -gt 0 ] || return 0
    echo "== installing: ${missing[*]}"
    echo "postfix postfix/main_mailer_type select No configuration" | $sudo debconf-set-selections
    $sudo apt-get update -qq
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
        $sudo chmod 755 /usr/sbin/policy-rc.d
        guard=1
    fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
    if [ -n "$guard" ]; then $sudo rm -f /usr/sbin/policy-rc.d; fi
}
