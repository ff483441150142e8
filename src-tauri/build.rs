fn main() {
    // tauri.conf.json sits at the repository root (the package root), but the capability
    // files live with the rest of the Tauri sources in src-tauri/.
    println!("cargo:rerun-if-changed=src-tauri/capabilities");
    let attributes =
        tauri_build::Attributes::new().capabilities_path_pattern("./src-tauri/capabilities/**/*");
    tauri_build::try_build(attributes).expect("failed to run the Tauri build script");
}
