//! `latchkey-provider`: a data provider's command line. This first step creates the identity;
//! requests and the reader follow once latchkey-proto has streams and consents.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use latchkey_provider::keychain::KeyringStore;
use latchkey_provider::{profile, Profile};

#[derive(Debug, Parser)]
#[command(
    name = "latchkey-provider",
    version,
    about = "A data provider's side of Latchkey consent"
)]
struct Cli {
    /// Profile directory (default: $LATCHKEY_PROVIDER_PROFILE, else $XDG_DATA_HOME/latchkey-provider).
    #[arg(long, global = true)]
    profile: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Create this provider's identity: signing and KEM keys in the OS keychain.
    Init {
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "")]
        url: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let dir = cli.profile.unwrap_or_else(profile::default_dir);
    let result = (|| -> anyhow::Result<()> {
        let Cmd::Init { name, url } = cli.command;
        let store = KeyringStore::open()?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis() as u64;
        let p = Profile::init(&dir, &name, &url, &store, &mut rand::rngs::OsRng, now)?;
        println!(
            "provider {} created; signing key {}",
            p.identity().name,
            p.identity().signing_key
        );
        Ok(())
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
