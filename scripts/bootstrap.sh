# Sourced by scripts/serve and scripts/check: make .venv with the project installed.
# Usage: bootstrap EXTRAS DEBIAN_PACKAGES...   (EXTRAS like "" or "[test]")
# Installs the Debian packages that are missing (as root, or through sudo), creates .venv with
# the system's python3 (3.11 or newer) and installs the project into it in editable mode.

bootstrap() {
    local extras=$1
    shift
    local need=()
    command -v python3 >/dev/null || need+=(python3)
    python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
    for pkg in "$@"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
    done
    if [ ${#need[@]} -gt 0 ]; then
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo=sudo
        echo "installing Debian packages: ${need[*]}" >&2
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    fi
    python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
        echo "avatar-streamer needs Python 3.11 or newer (python3 is $(python3 --version))" >&2
        exit 1
    }
    [ -x .venv/bin/python ] || python3 -m venv .venv
    .venv/bin/python -m pip install -q --disable-pip-version-check -U pip
    .venv/bin/python -m pip install -q --disable-pip-version-check -e ".${extras}"
}
