//! Pinned guest arguments end to end through the real `latchkey` and `latchkeyd` binaries and
//! the real OS keychain (run inside `dbus-run-session` with an unlocked gnome-keyring, as
//! scripts/test.sh does): the owner pins arguments with `latchkey invite … --args`, `latchkey
//! grants` lists them, a guest opens with exactly those (the door's script gets them as argv)
//! and is refused anything else; a guest without pins is refused any argument.

#[path = "support/cli.rs"]
mod cli;
mod support;

use cli::{require_secret_service, start_nodes, Cli, Door};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_pin_guest_arguments_with_the_cli() {
    require_secret_service();
    let tmp = tempfile::tempdir().unwrap();
    let nodes = start_nodes(tmp.path(), 3).await;
    let urls: Vec<String> = nodes.iter().map(|n| n.url()).collect();
    let door = Door::start(tmp.path(), "Front door", &urls, &[]);

    let mut owner = Cli::new(tmp.path().join("owner"));
    owner.init();
    let mut add = vec!["nodes", "add"];
    add.extend(urls.iter().map(String::as_str));
    owner.ok(&add);
    owner.ok(&[
        "claim",
        "--image",
        door.dir.join("claim.png").to_str().unwrap(),
    ]);

    // Owners may pass arguments: the script sees them as argv.
    owner.ok(&[
        "open",
        "Front door",
        "--args-hex",
        "2d2d666173740066726f6e74",
    ]);
    assert_eq!(door.opened(), 1);
    assert!(std::fs::read_to_string(&door.log)
        .unwrap()
        .ends_with("unlock --fast front\n"));

    // Bad pins change nothing: refused before anything is signed.
    let out = owner.run(&[
        "invite",
        "Front door",
        "--name",
        "Eve",
        "--until",
        "+1h",
        "--args",
        &"x".repeat(257),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("at most 256 bytes"));
    let out = owner.run(&[
        "invite",
        "Front door",
        "--name",
        "Eve",
        "--until",
        "+1h",
        "--args-hex",
        "zz",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not hex"));
    assert!(owner.json(&["grants"])["grants"]
        .as_array()
        .unwrap()
        .is_empty());

    // One guest pinned to `--hold-open 5`, one without pins.
    let pinned = owner.json(&[
        "invite",
        "Front door",
        "--name",
        "Ana",
        "--until",
        "+1h",
        "--args-hex",
        "2d2d686f6c642d6f70656e0035",
    ]);
    assert_eq!(
        pinned["arguments_hex"],
        serde_json::json!(["2d2d686f6c642d6f70656e0035"])
    );
    let bare = owner.json(&["invite", "Front door", "--name", "Ben", "--until", "+1h"]);
    assert_eq!(bare["arguments"], serde_json::json!([]));
    let listed = owner.ok(&["grants"]);
    assert!(
        listed.contains("args hex:2d2d686f6c642d6f70656e0035"),
        "{listed}"
    );

    let mut ana = Cli::new(tmp.path().join("ana"));
    let accepted = ana.ok(&["accept", pinned["link"].as_str().unwrap()]);
    assert!(
        accepted.contains("exactly one of: hex:2d2d686f6c642d6f70656e0035"),
        "{accepted}"
    );
    let mut ben = Cli::new(tmp.path().join("ben"));
    ben.ok(&["accept", bare["link"].as_str().unwrap()]);

    // Exactly the pinned argv passes.
    let out = ana.ok(&[
        "open",
        "Front door",
        "--args-hex",
        "2d2d686f6c642d6f70656e0035",
    ]);
    assert!(out.contains("unlock accepted"), "{out}");
    assert_eq!(door.opened(), 2);
    assert!(std::fs::read_to_string(&door.log)
        .unwrap()
        .ends_with("unlock --hold-open 5\n"));
    // Anything else is refused and the script does not run.
    for args in [
        vec![
            "--args-hex",
            "2d2d67756573742d666c6167002f6574632f736861646f77",
        ],
        vec!["--args=--hold-open"],
    ] {
        let mut cmd = vec!["open", "Front door"];
        cmd.extend(&args);
        for guest in [&mut ana, &mut ben] {
            let out = guest.run(&cmd);
            assert_eq!(out.status.code(), Some(2), "{args:?}");
            let said = String::from_utf8_lossy(&out.stderr);
            assert!(said.contains("ArgumentsNotGranted"), "{said}");
            assert!(said.contains("does not allow passing arguments"), "{said}");
        }
    }
    assert_eq!(door.opened(), 2);
    // Without arguments both guests may open.
    assert!(ben.ok(&["open", "Front door"]).contains("unlock accepted"));
    assert_eq!(door.opened(), 3);

    for n in nodes {
        n.shutdown().await.unwrap();
    }
}
