//! hook-cli: a small frecency directory jumper in the style of the CLIs that
//! a shell hook runs on every `cd`. `add` is the hot command: it reads a small
//! database, bumps one entry and writes it back, in about a millisecond.
//!
//! With the `telemetry` feature it integrates telemetry-client as the docs
//! say: the compiled manifest (`manifest!`) and `build()` first in `main`.
//! It allows no first-run prompt: `add` runs in a hook and `init`'s output is
//! `eval`ed by a shell start-up file, so users opt in with
//! `hook-cli telemetry enable`.
//!
//! `BENCH_UPLOAD_INTERVAL_SECS` sets the client's upload interval (0: every
//! run with data starts the uploader, the worst case the benchmark measures).

// Printing is this program's job.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod cli;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use cli::{Cli, Command, Shell};
#[cfg(feature = "telemetry")]
use telemetry_client::cli::Run;

#[cfg(feature = "telemetry")]
mod events {
    telemetry_client::manifest!("telemetry.toml");
}

fn main() -> ExitCode {
    #[cfg(feature = "telemetry")]
    let telemetry = {
        let mut builder = events::builder().tool_version(env!("CARGO_PKG_VERSION"));
        if let Some(secs) = std::env::var("BENCH_UPLOAD_INTERVAL_SECS")
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
        {
            builder = builder.upload_interval(std::time::Duration::from_secs(secs));
        }
        builder.build()
    };
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Add { path } => {
            #[cfg(feature = "telemetry")]
            events::command(&telemetry)
                .name(events::command::Name::Add)
                .record();
            add(&path)
        }
        Command::Query { keywords } => {
            #[cfg(feature = "telemetry")]
            events::command(&telemetry)
                .name(events::command::Name::Query)
                .record();
            query(&keywords)
        }
        Command::Init { shell } => {
            #[cfg(feature = "telemetry")]
            events::init(&telemetry)
                .shell(match shell {
                    Shell::Bash => events::init::Shell::Bash,
                    Shell::Zsh => events::init::Shell::Zsh,
                    Shell::Fish => events::init::Shell::Fish,
                })
                .record();
            init(shell)
        }
        #[cfg(feature = "telemetry")]
        Command::Telemetry(args) => return args.run(&telemetry),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hook-cli: {e}");
            ExitCode::FAILURE
        }
    }
}

fn database() -> PathBuf {
    let data = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    data.join("hook-cli").join("db.tsv")
}

/// Lines of `visits<TAB>path`.
fn load(db: &Path) -> Vec<(u64, String)> {
    std::fs::read_to_string(db)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let (n, path) = line.split_once('\t')?;
            Some((n.parse().ok()?, path.to_owned()))
        })
        .collect()
}

fn add(path: &Path) -> std::io::Result<()> {
    let db = database();
    let mut entries = load(&db);
    let path = path.to_string_lossy().into_owned();
    match entries.iter_mut().find(|(_, p)| *p == path) {
        Some((n, _)) => *n += 1,
        None => entries.push((1, path)),
    }
    entries.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    entries.truncate(1000);
    let dir = db.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    // Write a temporary file and rename it over the database, as such tools
    // do, so a crash never leaves half a database.
    let tmp = dir.join(format!(".db.{}.tmp", std::process::id()));
    let mut file = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
    for (n, p) in &entries {
        writeln!(file, "{n}\t{p}")?;
    }
    file.into_inner().map_err(|e| e.into_error())?;
    std::fs::rename(&tmp, &db)
}

fn query(keywords: &[String]) -> std::io::Result<()> {
    let best = load(&database())
        .into_iter()
        .find(|(_, p)| keywords.iter().all(|k| p.contains(k.as_str())));
    match best {
        Some((_, p)) => println!("{p}"),
        None => return Err(std::io::Error::other("no match")),
    }
    Ok(())
}

fn init(shell: Shell) -> std::io::Result<()> {
    let hook = match shell {
        Shell::Bash => "__hook_cli() { hook-cli add \"$PWD\"; }\nPROMPT_COMMAND=\"__hook_cli${PROMPT_COMMAND:+;$PROMPT_COMMAND}\"",
        Shell::Zsh => "__hook_cli() { hook-cli add \"$PWD\"; }\nchpwd_functions+=(__hook_cli)",
        Shell::Fish => "function __hook_cli --on-variable PWD; hook-cli add \"$PWD\"; end",
    };
    println!("{hook}");
    Ok(())
}
