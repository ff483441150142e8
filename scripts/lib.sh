# Shared by scripts/test.sh, scripts/run-app.sh and .ci/run; source it, do not run it.
# shellcheck shell=bash

LATCHKEY_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# Debian 12 packages. The first line builds the Tauri app (WebKitGTK 4.1 and friends; the
# camera crate's V4L2 bindings need libclang-dev, on the second line);
# the second gives tests a real Secret Service (gnome-keyring on a private D-Bus) and
# lets them drive the real app window (Xvfb, WebKitWebDriver) and talk to a real MQTT broker
# (Mosquitto, started by the device agent's tests); faketime sets the device agent's clock back
# in the clock-rollback test.
LATCHKEY_APT_PACKAGES=(
  libwebkit2gtk-4.1-dev libgtk-3-dev libayatana-appindicator3-dev librsvg2-dev libssl-dev libxdo-dev build-essential file pkg-config
  gnome-keyring dbus-x11 libsecret-tools xvfb xauth webkit2gtk-driver mosquitto libclang-dev faketime
  postgresql
)

# Vite 8 refuses older Node; Debian 12's own nodejs (18) is too old.
LATCHKEY_NODE_MIN=20.19

log() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    die "need root to run: $*"
  fi
}

missing_apt_packages() {
  local pkg
  for pkg in "${LATCHKEY_APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}\n' "$pkg" 2>/dev/null | grep -q '^install ok installed$' || printf '%s\n' "$pkg"
  done
}

# Installs every package in LATCHKEY_APT_PACKAGES; with no argument it skips apt
# entirely when all of them are already installed, with --always it refreshes the
# package lists and installs regardless (CI on a fresh machine).
# shellcheck disable=SC2120 # the flag is optional
install_apt_packages() {
  local missing
  missing=$(missing_apt_packages)
  if [ "${1:-}" != --always ] && [ -z "$missing" ]; then
    return
  fi
  log "Installing system packages${missing:+: ${missing//$'\n'/ }}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${LATCHKEY_APT_PACKAGES[@]}" >/dev/null
}

ensure_rust() {
  if ! command -v cargo >/dev/null 2>&1 && [ -f "${CARGO_HOME:-$HOME/.cargo}/env" ]; then
    # shellcheck disable=SC1091
    . "${CARGO_HOME:-$HOME/.cargo}/env"
  fi
  command -v cargo >/dev/null 2>&1 || die "cargo not found; install Rust with rustup"
  local component
  for component in rustfmt clippy; do
    if ! rustup component list --installed 2>/dev/null | grep -q "^$component"; then
      log "Adding rustup component $component"
      rustup component add "$component"
    fi
  done
}

ensure_node() {
  command -v node >/dev/null 2>&1 || die "node not found; Node.js $LATCHKEY_NODE_MIN or newer is needed"
  local have
  have=$(node -p 'process.versions.node')
  if [ "$(printf '%s\n%s\n' "$LATCHKEY_NODE_MIN" "$have" | sort -V | head -n1)" != "$LATCHKEY_NODE_MIN" ]; then
    die "Node.js $have is too old; $LATCHKEY_NODE_MIN or newer is needed"
  fi
}

# Installs ui/node_modules exactly as package-lock.json says. With --if-stale it
# leaves an install that is newer than the lock file alone.
# shellcheck disable=SC2120 # the flag is optional
install_ui_deps() {
  local marker=$LATCHKEY_ROOT/ui/node_modules/.package-lock.json
  if [ "${1:-}" = --if-stale ] && [ -f "$marker" ] && [ "$marker" -nt "$LATCHKEY_ROOT/ui/package-lock.json" ]; then
    return
  fi
  log "Installing UI dependencies (npm ci)"
  npm --prefix "$LATCHKEY_ROOT/ui" ci --no-audit --no-fund
}

# Runs a command inside a private D-Bus session with an unlocked gnome-keyring, so
# code that uses the OS keychain meets a real Secret Service and never the user's
# own keyring. HOME points at a throwaway directory for the keyring's files; cargo
# and rustup keep finding the real toolchain through CARGO_HOME and RUSTUP_HOME.
with_secret_service() {
  local keyring_home runtime_dir status=0
  local cargo_home=${CARGO_HOME:-$HOME/.cargo} rustup_home=${RUSTUP_HOME:-$HOME/.rustup}
  keyring_home=$(mktemp -d)
  runtime_dir=$(mktemp -d)
  chmod 700 "$runtime_dir"
  # shellcheck disable=SC2016 # the inner script expands its own variables
  HOME=$keyring_home XDG_RUNTIME_DIR=$runtime_dir \
    CARGO_HOME=$cargo_home RUSTUP_HOME=$rustup_home \
    dbus-run-session -- bash -c '
      set -euo pipefail
      eval "$(printf %s latchkey-test | gnome-keyring-daemon --unlock --components=secrets)"
      export GNOME_KEYRING_CONTROL
      # Fail here, plainly, if the keyring is not answering, rather than in some test later.
      printf %s probe | secret-tool store --label="latchkey test probe" latchkey-test probe
      [ "$(secret-tool lookup latchkey-test probe)" = probe ] || { echo "Secret Service probe failed" >&2; exit 1; }
      secret-tool clear latchkey-test probe
      "$@"
    ' bash "$@" || status=$?
  rm -rf "$keyring_home" "$runtime_dir"
  return "$status"
}
