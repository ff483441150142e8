#!/usr/bin/env bash
# Runs every test: UI type checks and unit tests, then formatting, lints and the Rust
# tests of the whole workspace (the app included) against a real Secret Service.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
cd "$LATCHKEY_ROOT"

install_apt_packages
ensure_rust
ensure_node

install_ui_deps
log "UI: svelte-check"
npm --prefix ui run --silent check
log "UI: vitest"
npm --prefix ui run --silent test
# The app embeds ui/dist at compile time, so the UI is built before any cargo step.
log "UI: build"
npm --prefix ui run --silent build

# custom-protocol makes the test build the real app, serving the embedded ui/dist,
# instead of a dev shell that expects a Vite server; clippy and test use the same
# features so they share one set of compiled dependencies.
cargo_features=(--features tauri/custom-protocol)

log "cargo fmt"
cargo fmt --all --check
log "cargo clippy"
cargo clippy --workspace --all-targets "${cargo_features[@]}" -- -D warnings
# The product build (no demo) compiles apart from the demo's code; keep it building.
log "cargo clippy (the app without the demo)"
cargo clippy -p latchkey-app --no-default-features "${cargo_features[@]}" -- -D warnings
# The owner core and the provider pick their keychain store by target (crates/latchkey-keychain).
# Windows is checked here through Debian's mingw-w64; macOS, iOS and Android need Apple's SDK
# or the Android NDK for the C code underneath, which Debian does not package.
# The target's standard library comes from rustup's server: without it (offline), say so and
# go on; with it, a failing check fails the run.
# The app is checked as it ships (no demo: the demo's door is latchkeyd, a Linux daemon), which
# covers its Windows-only code (Windows Hello in src-tauri/src/presence.rs).
log "cargo clippy latchkey-owner, latchkey-provider and the product app for Windows (x86_64-pc-windows-gnu)"
if rustup target list --installed | grep -qx x86_64-pc-windows-gnu ||
  rustup target add x86_64-pc-windows-gnu; then
  cargo clippy -p latchkey-owner -p latchkey-provider -p latchkey-app --no-default-features \
    --target x86_64-pc-windows-gnu -- -D warnings
else
  log "Skipped: rustup could not install the x86_64-pc-windows-gnu target"
fi
# The app's end-to-end test drives the real window through tauri-driver (tests/app_e2e.rs).
if ! command -v tauri-driver >/dev/null 2>&1; then
  log "Installing tauri-driver"
  cargo install tauri-driver --locked
fi
# Cross-crate tests run the real binaries from target/ (tests/support); build them first so a
# warm target/ never hands a test a binary older than the source.
log "cargo build (binaries)"
cargo build --workspace --bins "${cargo_features[@]}"
# What people install: the app's .deb (product profile) and the device agent's. Installing
# them is tested (tests/packages_e2e.rs) where this runs as root, as CI does.
package_e2e=0
if [ "$(id -u)" -eq 0 ]; then
  ./scripts/package.sh
  package_e2e=1
else
  log "Skipped: building and installing the packages needs root (./scripts/package.sh builds them)"
fi
log "cargo test (inside a private Secret Service session; the app's test in a private X server)"
status=0
LATCHKEY_PACKAGE_E2E=$package_e2e LATCHKEY_APP_E2E=1 with_secret_service cargo test --workspace --no-fail-fast "${cargo_features[@]}" || status=$?
# The registry node's suite again on its PostgreSQL backend: every test file's node stores in a
# throwaway cluster (latchkey_testkit::postgres, loopback only) instead of SQLite files.
log "cargo test -p latchkey-node on PostgreSQL"
LATCHKEY_NODE_TEST_DB=postgres cargo test -p latchkey-node --no-fail-fast || status=$?
exit "$status"
