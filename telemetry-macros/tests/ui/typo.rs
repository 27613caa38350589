// A misspelt key in the manifest fails the build, naming file, line and column.
mod events {
    telemetry_client::manifest!("ui/typo.toml");
}

fn main() {}
