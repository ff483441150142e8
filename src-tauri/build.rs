fn main() {
    // tauri.conf.json sits at the repository root (the package root), but the capability
    // files live with the rest of the Tauri sources in src-tauri/.
    println!("cargo:rerun-if-changed=src-tauri/capabilities");
    // Listing the app's commands makes Tauri generate an `allow-…` permission for each and
    // refuse any command a capability does not grant (without the list, every command is open
    // to every window).
    let manifest = tauri_build::AppManifest::new().commands(&[
        "app_info",
        "status",
        "create_identity",
        "confirm_backup",
        "restore_identity",
        "recovery_words",
        "add_nodes",
        "set_nodes_to_ask",
        "devices",
        "refresh_devices",
        "claim_text",
        "claim_image",
        "open_device",
        "demo_view",
        "device_owners",
        "propose_owners",
        "approve_proposal",
        "proposals",
        "accept_proposal",
        "grants",
        "invite",
        "revoke",
        "accept_invitation",
        "invitations",
        "audit",
        "stays",
        "stays_sync",
        "share_stay",
        "activity",
        "take_invite_link",
        "consent_request_add",
        "consent_requests",
        "consent_request_dismiss",
        "consent_approve",
        "consent_revoke",
        "consents",
        "consent_log",
        "meter",
        "take_consent_link",
        "camera_start",
        "camera_stop",
    ]);
    let attributes = tauri_build::Attributes::new()
        .capabilities_path_pattern("./src-tauri/capabilities/**/*")
        .app_manifest(manifest);
    tauri_build::try_build(attributes).expect("failed to run the Tauri build script");
}
