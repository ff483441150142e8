#!/usr/bin/env bash
# Builds what people install:
# - the app, as a product (no demo inside) with the size-first `product` profile, packaged by
#   the Tauri bundler into target/release/bundle/deb/ (a .deb whose desktop entry registers the
#   `latchkey://` scheme, so invitation links open the app);
# - the device agent `latchkeyd`, packaged by cargo-deb into target/debian/ (with its systemd
#   unit and the postinst that creates its system user).
# No AppImage: the Tauri bundler downloads linuxdeploy and its plugins from GitHub to make one,
# and nothing outside the package registries is reachable where this runs. Debian's own
# packages do not carry linuxdeploy or appimagetool either.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
cd "$LATCHKEY_ROOT"

install_apt_packages
ensure_rust
ensure_node
install_ui_deps --if-stale

target_dir=${CARGO_TARGET_DIR:-$LATCHKEY_ROOT/target}

log "Building the UI"
npm --prefix ui run --silent build

log "Building and bundling the app (.deb; profile product, no demo)"
# The UI was just built, so the bundler's own beforeBuildCommand is skipped; `--ci` never
# prompts. Arguments after `--` go to cargo.
# The profile keeps the symbol table (for `cargo bloat`); what is packaged is stripped.
app_binary="$target_dir/product/latchkey-app"
ui/node_modules/.bin/tauri build --ci --bundles deb \
  --config "{\"build\":{\"beforeBuildCommand\":\"\",\"beforeBundleCommand\":\"strip --strip-all '$app_binary'\"}}" \
  -- --profile product --no-default-features -p latchkey-app
# Cargo names the output folder after the profile (target/product/); the bundles belong
# where release bundles are looked for.
rm -rf "$target_dir/release/bundle"
mkdir -p "$target_dir/release"
mv "$target_dir/product/bundle" "$target_dir/release/bundle"

if ! command -v cargo-deb >/dev/null 2>&1; then
  log "Installing cargo-deb"
  cargo install cargo-deb --version "^3" --locked
fi
log "Building the device agent's package (cargo deb, release)"
cargo deb -p latchkey-device

log "Packages"
ls -l "$target_dir"/release/bundle/deb/*.deb "$target_dir"/debian/*.deb
