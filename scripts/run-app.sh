#!/usr/bin/env bash
# Builds the UI and the release app, then opens it in demo mode: three registry nodes and a
# simulated front door run inside the app (loopback only) until it quits. Extra arguments go
# to the app; `--no-demo` opens your own profile instead.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
cd "$LATCHKEY_ROOT"

install_apt_packages
ensure_rust
ensure_node

if [ -z "${DISPLAY:-}" ] && [ -z "${WAYLAND_DISPLAY:-}" ]; then
  die "no display: the app opens a window, so run this from a desktop session (or set DISPLAY)"
fi

demo=(--demo)
args=()
for arg in "$@"; do
  if [ "$arg" = --no-demo ]; then demo=(); else args+=("$arg"); fi
done

install_ui_deps --if-stale
log "Building the UI"
npm --prefix ui run --silent build
log "Building the app (release)"
cargo build --release --features tauri/custom-protocol -p latchkey-app

target_dir=${CARGO_TARGET_DIR:-$LATCHKEY_ROOT/target}
app=("$target_dir/release/latchkey-app" "${demo[@]}" "${args[@]}")

# The app keeps its key in the desktop's Secret Service. Without one (a bare X session, a
# container), run inside a private, throwaway one, so the demo still works and leaves nothing.
if [ -n "${DBUS_SESSION_BUS_ADDRESS:-}" ] && secret-tool search --all latchkey probe >/dev/null 2>&1; then
  log "Starting Latchkey${demo:+ (demo)}"
  exec "${app[@]}"
fi
[ ${#demo[@]} -gt 0 ] || die "no Secret Service on this desktop: start GNOME Keyring or KWallet, or run the demo"
log "Starting Latchkey (demo) with a private Secret Service: this desktop has none"
with_secret_service "${app[@]}"
