use telemetry_protocol::{Manifest, Tier};

const DEMO: &str = r#"project = "demo-cli"
endpoint = "http://127.0.0.1:8750"

[events.command]
description = "A command ran"
props.name = { kind = "enum", values = ["greet", "init"], description = "Which command" }

[events.command.props.duration_ms]
kind = "bucket"
bounds = [10, 100, 1000]
description = "How long"

[identity.email]
description = "mail"
max_len = 254
"#;

#[test]
fn parses_demo() {
    let m = Manifest::parse(DEMO).unwrap();
    assert_eq!(m.project, "demo-cli");
    assert_eq!(m.event("command").unwrap().props.len(), 2);
    assert_eq!(m.event("install").unwrap().min_tier, Tier::Aggregate);
}

#[test]
fn error_lines() {
    let bad = DEMO.replace("bounds = [10, 100, 1000]", "bounds = [100, 10]");
    let e = Manifest::parse(&bad).unwrap_err();
    assert_eq!(e.line, 10, "{e}");
    let bad = DEMO.replace(
        "[events.command.props.duration_ms]",
        "[events.Command.props.duration_ms]",
    );
    let e = Manifest::parse(&bad).unwrap_err();
    assert_eq!(e.line, 8, "{e}");
    let bad = DEMO.replace("kind = \"bucket\"", "kind = \"text\"");
    let e = Manifest::parse(&bad).unwrap_err();
    assert_eq!(e.line, 9, "{e}");
}
