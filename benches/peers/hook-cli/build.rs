//! Writes shell completions from the same clap definition the binary uses.

use clap::CommandFactory;

include!("src/cli.rs");

fn main() {
    println!("cargo::rerun-if-changed=src/cli.rs");
    let Some(out) = std::env::var_os("OUT_DIR") else {
        return;
    };
    let mut cmd = Cli::command();
    for shell in [
        clap_complete::Shell::Bash,
        clap_complete::Shell::Zsh,
        clap_complete::Shell::Fish,
    ] {
        if let Err(e) = clap_complete::generate_to(shell, &mut cmd, "hook-cli", &out) {
            println!("cargo::warning=cannot write {shell} completions: {e}");
        }
    }
}
