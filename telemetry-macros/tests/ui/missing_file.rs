// A manifest path that does not exist fails the build.
mod events {
    telemetry_client::manifest!("ui/nowhere.toml");
}

fn main() {}
