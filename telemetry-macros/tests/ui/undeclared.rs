// Nothing the manifest does not declare can be written.
mod events {
    telemetry_client::manifest!("ui/ok.toml");
}

use events::command::Name;

fn main() {
    let t = events::builder().build();
    // An undeclared event.
    events::deploy(&t).record();
    // An undeclared prop.
    events::command(&t).region(Name::Greet).record();
    // An undeclared enum value.
    events::command(&t).name(Name::Init).record();
    // Free text for an enum prop, and text for a bucket.
    events::command(&t).name("greet").duration_ms("55").record();
}
