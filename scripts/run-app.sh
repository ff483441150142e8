#!/usr/bin/env bash
# Builds the UI and the release app, then opens the app window.
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

install_ui_deps --if-stale
log "Building the UI"
npm --prefix ui run --silent build
log "Building the app (release)"
cargo build --release --features tauri/custom-protocol -p latchkey-app

target_dir=${CARGO_TARGET_DIR:-$LATCHKEY_ROOT/target}
log "Starting Latchkey"
exec "$target_dir/release/latchkey-app" "$@"
