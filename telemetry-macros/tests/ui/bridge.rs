// A bridge checks the host's enum against the manifest's values, and names
// only enum props the manifest declares.
enum Action {
    Greet,
    // The manifest's `dry-run` has no variant here.
}

enum Extra {
    Greet,
    DryRun,
    // A variant the manifest does not list needs a `try` bridge.
    Deploy,
}

mod events {
    telemetry_client::manifest!("ui/ok.toml", command.name = crate::Action, command.name = crate::Extra);
}

mod more {
    telemetry_client::manifest!("ui/ok.toml", command.duration_ms = crate::Action);
}

fn main() {}
