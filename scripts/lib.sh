# Shared by scripts/test.sh, scripts/run-app.sh and .ci/run; source it, do not run it.
# shellcheck shell=bash

LATCHKEY_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# Debian 12 packages. The first line builds the Tauri app (WebKitGTK 4.1 and friends; the
# camera crate's V4L2 bindings need libclang-dev, on the second line);
# the second gives tests a real Secret Service (gnome-keyring on a private D-Bus) and
# lets them drive the real app window (Xvfb, WebKitWebDriver) and talk to a real MQTT broker
# (Mosquitto, started by the device agent's tests); faketime sets the device agent's clock back
# in the clock-rollback test. The third: PostgreSQL for the node suite's second backend, and
# the mingw-w64 C compiler so the owner core (its SQLite and sntrup761 C code) can be checked
# for Windows, whose keychain store it picks by target. The fourth: what the package test
# checks an installed .deb with (desktop-file-validate, xdg-mime, systemd-analyze verify).
LATCHKEY_APT_PACKAGES=(
  libwebkit2gtk-4.1-dev libgtk-3-dev libayatana-appindicator3-dev librsvg2-dev libssl-dev libxdo-dev build-essential file pkg-config
  gnome-keyring dbus-x11 libsecret-tools xvfb xauth webkit2gtk-driver mosquitto libclang-dev faketime
  postgresql gcc-mingw-w64-x86-64
  desktop-file-utils xdg-utils systemd
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
#
# Ctrl-C in a terminal signals the whole foreground process group. The bus and the
# keyring therefore run in a session of their own: the command (the demo app) gets
# the signal and still reaches the keyring while it removes its demo key; they stop
# only after it has exited. Whichever way this ends (normal exit, INT, TERM, HUP, a
# second Ctrl-C during the clean-up), both daemons are stopped and the throwaway
# directories removed. The body is a subshell so its traps stay out of the caller.
with_secret_service() (
  cargo_home=${CARGO_HOME:-$HOME/.cargo} rustup_home=${RUSTUP_HOME:-$HOME/.rustup}
  keyring_home='' runtime_dir='' bus_pid='' keyring_pid='' status=0 tries=0

  # shellcheck disable=SC2317 # called from the traps below
  cleanup() {
    # A second Ctrl-C must not stop the clean-up halfway.
    trap '' INT TERM HUP
    if [ -n "$keyring_pid" ]; then
      kill "$keyring_pid" 2>/dev/null || true
      wait "$keyring_pid" 2>/dev/null || true
    fi
    if [ -n "$bus_pid" ]; then
      kill "$bus_pid" 2>/dev/null || true
      wait "$bus_pid" 2>/dev/null || true
    fi
    if [ -n "$keyring_home" ]; then rm -rf -- "$keyring_home"; fi
    if [ -n "$runtime_dir" ]; then rm -rf -- "$runtime_dir"; fi
    keyring_pid='' bus_pid='' keyring_home='' runtime_dir=''
  }
  # Bash runs these only once the foreground command has exited. Dying of the same
  # signal afterwards lets the caller (a script, a terminal) see what happened.
  # shellcheck disable=SC2317
  on_signal() {
    cleanup
    trap - "$1" EXIT
    kill -s "$1" "$BASHPID"
  }
  trap cleanup EXIT
  trap 'on_signal INT' INT
  trap 'on_signal TERM' TERM
  trap 'on_signal HUP' HUP

  keyring_home=$(mktemp -d)
  runtime_dir=$(mktemp -d)
  chmod 700 "$runtime_dir"
  export HOME=$keyring_home XDG_RUNTIME_DIR=$runtime_dir CARGO_HOME=$cargo_home RUSTUP_HOME=$rustup_home

  # Both daemons run in the foreground of a session of their own (setsid), so their pids
  # are known and they are reaped here.
  setsid dbus-daemon --session --nofork --address="unix:path=$runtime_dir/bus" --print-address=1 \
    >"$runtime_dir/bus-address" 2>"$runtime_dir/bus.log" &
  bus_pid=$!
  until [ -s "$runtime_dir/bus-address" ]; do
    tries=$((tries + 1))
    if [ "$tries" -gt 100 ] || ! kill -0 "$bus_pid" 2>/dev/null; then
      die "the private D-Bus did not start: $(cat "$runtime_dir/bus.log")"
    fi
    sleep 0.1
  done
  DBUS_SESSION_BUS_ADDRESS=$(head -n1 "$runtime_dir/bus-address")
  export DBUS_SESSION_BUS_ADDRESS
  unset DBUS_STARTER_ADDRESS DBUS_STARTER_BUS_TYPE GNOME_KEYRING_CONTROL

  printf %s latchkey-test | setsid gnome-keyring-daemon --foreground --unlock --components=secrets >/dev/null &
  keyring_pid=$!
  # Wait for it to own the Secret Service name: asking earlier would make the bus
  # activate a second, locked keyring.
  tries=0
  until dbus-send --session --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus \
    org.freedesktop.DBus.NameHasOwner string:org.freedesktop.secrets 2>/dev/null | grep -q 'boolean true'; do
    tries=$((tries + 1))
    if [ "$tries" -gt 100 ] || ! kill -0 "$keyring_pid" 2>/dev/null; then die "gnome-keyring-daemon did not start"; fi
    sleep 0.1
  done
  # Fail here, plainly, if the keyring is not answering, rather than in some test later.
  printf %s probe | secret-tool store --label="latchkey test probe" latchkey-test probe
  [ "$(secret-tool lookup latchkey-test probe)" = probe ] || die "Secret Service probe failed"
  secret-tool clear latchkey-test probe

  "$@" || status=$?
  exit "$status"
)
