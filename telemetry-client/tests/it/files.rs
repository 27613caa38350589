//! Files: a corrupt consent file fails closed with one line on stderr, an
//! unwritable config or state folder never breaks the host, and every file
//! the client writes is private.

use std::collections::BTreeMap;

use telemetry_client::{Error, Source, Tier};

use crate::support::{Home, MANIFEST, PROBE_MANIFEST};

#[test]
fn a_corrupt_consent_file_fails_closed_with_exactly_one_warning() {
    let home = Home::new();
    home.consent(PROBE_MANIFEST, Tier::Anonymous);
    let file = home.folders().tool_file("probe-cli");
    std::fs::write(&file, "level = \"anonym").unwrap();
    let out = home.command().args(["track", "3"]).output().unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].starts_with(&format!("telemetry: cannot read {}: ", file.display()))
            && lines[0].ends_with("; telemetry is off"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
    // Nothing was recorded.
    let paths = home.folders().tool_state("probe-cli");
    assert!(telemetry_client::testing::for_own_tests_only::spool_is_empty(&paths));

    let t = home.telemetry(PROBE_MANIFEST, "https://unused.invalid");
    let status = t.control().unwrap().status().unwrap();
    assert_eq!((status.level, status.source), (Tier::Off, Source::ToolFile));
    assert!(status.unreadable.is_some());
}

#[test]
fn a_corrupt_global_file_also_fails_closed() {
    let home = Home::new();
    home.consent(PROBE_MANIFEST, Tier::Anonymous);
    std::fs::write(home.folders().global_file(), "level = 3").unwrap();
    let out = home.command().args(["track", "1"]).output().unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("global.toml"), "{stderr}");
}

#[test]
fn an_unwritable_config_folder_is_an_error_naming_the_path() {
    let home = Home::new();
    let folders = home.folders();
    std::fs::create_dir_all(&folders.config).unwrap();
    // A file where the tools folder should be: fails even for root.
    std::fs::write(folders.tools_dir(), "").unwrap();
    let t = home.telemetry(MANIFEST, "https://unused.invalid");
    let err = t
        .control()
        .unwrap()
        .set_level(Tier::Anonymous, BTreeMap::new())
        .unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&folders.tools_dir().display().to_string()),
        "{err}"
    );
    // The host still runs, records nothing and prints only the one warning.
    t.track("command", [("name", "greet".into())]);
    assert_eq!(t.level(), Tier::Off);
}

#[test]
fn an_unwritable_state_folder_never_breaks_the_host() {
    let home = Home::new();
    // The consent file as PRIVACY.md documents it, written by hand.
    let file = home.folders().tool_file("probe-cli");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(
        &file,
        "level = \"anonymous\"\nupdated = \"1970-01-01T00:00:00.000Z\"\n",
    )
    .unwrap();
    let state = home.folders().state;
    std::fs::create_dir_all(state.parent().unwrap()).unwrap();
    std::fs::write(&state, "").unwrap();
    let out = home.command().args(["track", "3"]).output().unwrap();
    assert!(out.status.success());
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[cfg(unix)]
#[test]
fn every_file_written_by_a_real_run_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let home = Home::new();
    home.consent(PROBE_MANIFEST, Tier::Anonymous);
    let out = home.command().args(["track", "2"]).output().unwrap();
    assert!(out.status.success());
    let folders = home.folders();
    let paths = folders.tool_state("probe-cli");
    for file in [
        folders.tool_file("probe-cli"),
        paths.state_file(),
        paths.spool(),
        paths.data_lock(),
    ] {
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", file.display());
    }
    let mode = std::fs::metadata(&paths.dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
}
