//! The dashboard in a real browser: Debian's `chromium`, headless, driven over
//! the DevTools protocol by `headless_chrome` (no chromedriver needed).
//!
//! A real collector listens on 127.0.0.1:0 and receives data over HTTP at
//! every tier. The browser signs in through the form, reads the numbers off
//! the overview and project pages, checks that hostile client values are shown
//! as text (no element, no dialog), uses the date-range form, signs out, and
//! saves screenshots: into the test's temporary folder normally, and into
//! `docs/images/` for the README when `UPDATE_SCREENSHOTS=1`, so an ordinary
//! test run leaves the work tree clean.
//!
//! With `CI=true` the test fails when chromium is missing; elsewhere it is
//! skipped with a message.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use headless_chrome::protocol::cdp::Emulation::{MediaFeature, SetEmulatedMedia};
use headless_chrome::protocol::cdp::Page::CaptureScreenshotFormatOption;
use headless_chrome::protocol::cdp::types::Event;
use headless_chrome::types::Bounds;
use headless_chrome::{Browser, LaunchOptions, Tab};
use serde_json::Value;
use tokio::sync::oneshot;

use crate::common::*;
use crate::dashboard::*;

/// Where Debian installs chromium.
const CHROMIUM: &str = "/usr/bin/chromium";
/// The width of the screenshots, a common laptop window.
const WIDTH: u32 = 1280;

fn chromium() -> Option<PathBuf> {
    let path = Path::new(CHROMIUM);
    path.exists().then(|| path.to_owned())
}

/// Says why the test did nothing; a skipped test must be visible in the output.
#[allow(clippy::print_stderr)]
fn skip(why: &str) {
    eprintln!("browser test skipped: {why}");
}

fn launch(chromium: PathBuf, profile: &Path) -> Browser {
    // Chromium as root needs --no-sandbox (sandbox(false)); the rest keep a
    // test browser from reaching out to the network or syncing anything.
    let args: Vec<&OsStr> = [
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--force-color-profile=srgb",
    ]
    .into_iter()
    .map(OsStr::new)
    .collect();
    let options = LaunchOptions::default_builder()
        .path(Some(chromium))
        .headless(true)
        .sandbox(false)
        .user_data_dir(Some(profile.to_owned()))
        .window_size(Some((WIDTH, 900)))
        .idle_browser_timeout(Duration::from_secs(120))
        .args(args)
        .build()
        .unwrap();
    Browser::new(options).expect("chromium did not start")
}

fn eval(tab: &Tab, js: &str) -> Value {
    tab.evaluate(js, false)
        .unwrap_or_else(|e| panic!("evaluating {js}: {e}"))
        .value
        .unwrap_or(Value::Null)
}

fn text_of(tab: &Tab, selector: &str) -> String {
    tab.wait_for_element(selector)
        .unwrap_or_else(|e| panic!("{selector}: {e}"))
        .get_inner_text()
        .unwrap()
        .trim()
        .to_owned()
}

fn texts_of(tab: &Tab, selector: &str) -> Vec<String> {
    let js = format!(
        "JSON.stringify(Array.from(document.querySelectorAll({selector:?})).map(e => e.textContent))"
    );
    let json = eval(tab, &js);
    serde_json::from_str(json.as_str().unwrap()).unwrap()
}

/// Saves a screenshot of the whole page, resizing the window to its height first.
fn screenshot(tab: &Tab, path: &Path) {
    let height = eval(tab, "document.documentElement.scrollHeight")
        .as_f64()
        .unwrap();
    tab.set_bounds(Bounds::Normal {
        left: Some(0),
        top: Some(0),
        width: Some(f64::from(WIDTH)),
        height: Some(height.min(8000.0)),
    })
    .unwrap();
    // Let layout settle at the new size before capturing.
    std::thread::sleep(Duration::from_millis(300));
    let png = tab
        .capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true)
        .unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG came back");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, png).unwrap();
    tab.set_bounds(Bounds::Normal {
        left: Some(0),
        top: Some(0),
        width: Some(f64::from(WIDTH)),
        height: Some(900.0),
    })
    .unwrap();
}

/// Saves a screenshot of one section, with the window as tall as the page so
/// that the section is laid out and painted wherever it is.
fn section_screenshot(tab: &Tab, selector: &str, path: &Path) {
    let height = eval(tab, "document.documentElement.scrollHeight")
        .as_f64()
        .unwrap();
    tab.set_bounds(Bounds::Normal {
        left: Some(0),
        top: Some(0),
        width: Some(f64::from(WIDTH)),
        height: Some(height.min(8000.0)),
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let r = eval(
        tab,
        &format!(
            "(() => {{ const r = document.querySelector({selector:?}).getBoundingClientRect(); \
             return JSON.stringify([r.x, r.y + window.scrollY, r.width, r.height]); }})()"
        ),
    );
    let [x, y, width, height]: [f64; 4] = serde_json::from_str(r.as_str().unwrap()).unwrap();
    let clip = headless_chrome::protocol::cdp::Page::Viewport {
        x,
        y,
        width,
        height,
        scale: 1.0,
    };
    let png = tab
        .capture_screenshot(CaptureScreenshotFormatOption::Png, None, Some(clip), true)
        .unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG came back");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, png).unwrap();
    tab.set_bounds(Bounds::Normal {
        left: Some(0),
        top: Some(0),
        width: Some(f64::from(WIDTH)),
        height: Some(900.0),
    })
    .unwrap();
}

fn docs_images() -> PathBuf {
    if std::env::var("UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1") {
        return Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/images");
    }
    let dir = std::env::temp_dir().join(format!(
        "telemetry-dashboard-screenshots-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn the_dashboard_in_a_real_browser() {
    let Some(chromium) = chromium() else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true but {CHROMIUM} is missing: install Debian's chromium package");
        }
        skip(&format!(
            "{CHROMIUM} not found; install Debian's chromium to run it"
        ));
        return;
    };

    // A real collector on 127.0.0.1:0, fed over HTTP at every tier.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    crate::breakdowns::use_rich_manifest(&cfg);
    cfg.dashboard.public_projects = vec!["demo".to_owned()];
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let (url, server) = runtime.block_on(async {
        let state = state(&cfg);
        plant_hostile_events(&state).await;
        plant_hostile_props(&state).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(telemetry_collector::serve(listener, state, async {
            let _ = stopped.await;
        }));
        let client = client();
        let delivery = crate::breakdowns::delivery_payloads();
        // One payload sent twice, as after a lost answer: a retry.
        let retry = delivery[1].clone();
        for payload in sample_payloads()
            .into_iter()
            .chain(history_payloads())
            .chain(adoption_payloads())
            .chain(crate::breakdowns::prop_payloads())
            .chain(delivery)
            .chain([retry])
        {
            let (status, body) = http_post(&client, &format!("{url}/v1/ingest"), &payload)
                .await
                .unwrap();
            assert_eq!(status, 200, "{body}");
        }
        let (status, body) = http_post(&client, &format!("{url}/v1/ingest"), &hostile_payload())
            .await
            .unwrap();
        assert_eq!(
            status, 422,
            "the protocol refuses hostile event names: {body}"
        );
        (url, server)
    });

    let profile = tempfile::tempdir().unwrap();
    let browser = launch(chromium, profile.path());
    let tab = browser.new_tab().unwrap();
    tab.set_default_timeout(Duration::from_secs(30));
    let dialogs = Arc::new(AtomicBool::new(false));
    let seen = dialogs.clone();
    tab.add_event_listener(Arc::new(move |event: &Event| {
        if let Event::PageJavascriptDialogOpening(_) = event {
            seen.store(true, Ordering::SeqCst);
        }
    }))
    .unwrap();

    // Signed out, the dashboard sends the browser to the sign-in form.
    tab.navigate_to(&format!("{url}/dashboard"))
        .unwrap()
        .wait_until_navigated()
        .unwrap();
    assert!(
        tab.get_url().contains("/dashboard/login?next="),
        "{}",
        tab.get_url()
    );
    tab.wait_for_element("#token").unwrap().click().unwrap();
    tab.type_str(TOKEN).unwrap();
    tab.wait_for_element("button[type=submit]")
        .unwrap()
        .click()
        .unwrap();
    tab.wait_for_element("table.overview").unwrap_or_else(|e| {
        panic!(
            "{e}: no overview after sign-in at {}: {}",
            tab.get_url(),
            tab.get_content().unwrap_or_default()
        )
    });
    assert!(tab.get_url().ends_with("/dashboard"), "{}", tab.get_url());

    let cookies = tab.get_cookies().unwrap();
    let session = cookies
        .iter()
        .find(|c| c.name == "telemetry_session")
        .expect("a session cookie");
    assert!(session.http_only, "scripts cannot read the session");
    assert_eq!(format!("{:?}", session.same_site), "Some(Strict)");

    // The overview.
    let want = expected(30);
    let row = "tr[data-project=\"demo\"]";
    for (class, value) in [
        ("installs-7d", num(want.installs_7d)),
        ("installs-30d", num(want.installs)),
        ("installs-all", num(want.installs_all_time)),
        ("active", num(want.active)),
        ("completion", want.completion.clone()),
    ] {
        assert_eq!(text_of(&tab, &format!("{row} .{class}")), value, "{class}");
    }
    screenshot(&tab, &docs_images().join("dashboard-overview.png"));

    // The project page, reached through its link.
    tab.wait_for_element("a[href=\"/dashboard/projects/demo\"]")
        .unwrap()
        .click()
        .unwrap();
    tab.wait_for_element("#stat-installs").unwrap();
    for (id, expected) in [
        ("#stat-installs", num(want.installs)),
        ("#stat-installs-all-time", num(want.installs_all_time)),
        ("#stat-active", num(want.active)),
        ("#stat-setup-started", num(want.setup_started)),
        ("#stat-setup-completed", num(want.setup_completed)),
        ("#stat-completion", want.completion.clone()),
    ] {
        assert_eq!(text_of(&tab, id), expected, "{id}");
    }

    // Hostile values are text: exactly the raw strings, and no element or dialog came of them.
    let events = texts_of(&tab, "td.event-name");
    for hostile in HOSTILE_EVENTS {
        assert!(
            events.iter().any(|e| e == hostile),
            "{hostile} in {events:?}"
        );
    }
    let versions = texts_of(&tab, "#versions td.key");
    assert!(
        versions.iter().any(|v| v == HOSTILE_VERSION),
        "{versions:?}"
    );
    assert_eq!(eval(&tab, "document.querySelectorAll('script').length"), 0);
    assert_eq!(
        eval(&tab, "document.querySelectorAll('body img').length"),
        0
    );
    assert_eq!(
        eval(&tab, "document.querySelectorAll('[onerror]').length"),
        0
    );
    let html = tab.get_content().unwrap();
    assert!(!html.contains(EMAIL), "identity fields are never shown");
    // Charts rendered: the time series has one bar per day of the default 30-day range.
    assert_eq!(
        eval(&tab, "document.querySelectorAll('#usage rect.bar').length"),
        30
    );
    // The stylesheet loaded (a dark or light background, not the browser default).
    assert_ne!(
        eval(
            &tab,
            "getComputedStyle(document.querySelector('.kpi')).borderTopStyle"
        ),
        "none"
    );
    screenshot(&tab, &docs_images().join("dashboard-project.png"));

    // Version adoption: 16 versions, the ten most active drawn as stacked
    // areas in semver order, then "(other)"; the table says the same.
    assert_eq!(
        eval(
            &tab,
            "document.querySelectorAll('#adoption polygon.area').length"
        ),
        11
    );
    let versions = texts_of(&tab, "#adoption table.adoption td.key");
    assert_eq!(versions.len(), 11, "{versions:?}");
    assert_eq!(versions.last().map(String::as_str), Some("(other)"));
    let adoption_top = eval(
        &tab,
        "document.querySelector('#adoption polygon.area:last-of-type').getBoundingClientRect().height > 0",
    );
    assert_eq!(adoption_top, true, "the areas are drawn");
    // Props: every kind in its order, the long enum folded, hostile values as text.
    let panel = |event: &str, prop: &str| {
        texts_of(
            &tab,
            &format!(
                "section.prop[data-event={event:?}][data-prop={prop:?}] table.prop-values td.key"
            ),
        )
    };
    assert_eq!(panel("init", "took"), ["<100", "100..1000", ">=1000"]);
    assert_eq!(panel("init", "ci"), ["true", "false"]);
    assert_eq!(panel("init", "shell"), ["zsh", "bash", "fish"]);
    // Distinct installs of the last week beside the counts: fish came only
    // in aggregate counters, which carry no install.
    assert_eq!(
        texts_of(
            &tab,
            "section.prop[data-event=\"init\"][data-prop=\"shell\"] table.prop-values td.installs"
        ),
        ["1", "1", "0"]
    );
    assert_eq!(
        panel("init", "from"),
        ["1.9", "1.10.0", "2.0.0-rc.1", "2.0.0"]
    );
    let mode = panel("query", "mode");
    assert_eq!(mode.len(), 11);
    assert_eq!(mode.last().map(String::as_str), Some("(other)"));
    assert_eq!(
        texts_of(
            &tab,
            "section.prop[data-event=\"query\"][data-prop=\"mode\"] table.prop-values td.installs"
        )
        .last()
        .map(String::as_str),
        Some("—"),
        "no distinct count for the folded row"
    );
    let hostile_values = panel("command", HOSTILE_EVENTS[1]);
    assert_eq!(hostile_values, [HOSTILE_EVENTS[0]]);
    assert_eq!(
        eval(
            &tab,
            "document.querySelectorAll('section.prop svg rect.bar').length > 10"
        ),
        true
    );
    // Command usage.
    let commands = texts_of(&tab, "#commands td.key");
    for event in ["command", "init", "query"] {
        assert!(
            commands.iter().any(|c| c == event),
            "{event} in {commands:?}"
        );
    }
    let init_installs = eval(
        &tab,
        "[...document.querySelectorAll('#commands tr')].find(r => r.querySelector('td.key')?.textContent === 'init').querySelector('td.installs').textContent",
    );
    assert!(
        init_installs.as_str().is_some_and(|t| t.starts_with("2 (")),
        "the installs that used init: {init_installs}"
    );
    assert_eq!(eval(&tab, "document.querySelectorAll('script').length"), 0);
    // Delivery health: the sentence, and the non-zero drops and refusals.
    let summary = text_of(&tab, "#delivery-summary");
    assert!(
        summary.starts_with("About ") && summary.contains("known to be missing this week"),
        "{summary}"
    );
    assert!(
        summary.contains("3 dropped by clients, 1 refused by the collector"),
        "{summary}"
    );
    assert_eq!(
        texts_of(&tab, "#delivery-refused td.key"),
        ["unknown_event", "1.5.0"]
    );
    assert!(
        summary.contains("uploads this week were retries"),
        "{summary}"
    );
    let retries = text_of(&tab, "#delivery-retries");
    assert!(retries.contains("retries among them: 1 ("), "{retries}");
    assert_eq!(
        eval(
            &tab,
            "document.querySelectorAll('#delivery-dropped rect.bar').length"
        ),
        6
    );
    for (id, file) in [
        ("#delivery", "dashboard-delivery.png"),
        ("#adoption", "dashboard-adoption.png"),
        ("#props", "dashboard-props.png"),
    ] {
        section_screenshot(&tab, id, &docs_images().join(file));
    }

    // The dark theme follows the system's preference, with no script.
    let scheme = |value: &str| SetEmulatedMedia {
        media: None,
        features: Some(vec![MediaFeature {
            name: "prefers-color-scheme".to_owned(),
            value: value.to_owned(),
        }]),
    };
    let background = "getComputedStyle(document.body).backgroundColor";
    let light = eval(&tab, background);
    tab.call_method(scheme("dark")).unwrap();
    assert_ne!(eval(&tab, background), light, "the dark theme applies");
    screenshot(&tab, &docs_images().join("dashboard-project-dark.png"));
    tab.call_method(scheme("light")).unwrap();

    // On a narrow window nothing spills sideways: charts shrink and wide
    // tables scroll inside their own box.
    tab.set_bounds(Bounds::Normal {
        left: Some(0),
        top: Some(0),
        width: Some(390.0),
        height: Some(844.0),
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        eval(
            &tab,
            "document.documentElement.scrollWidth <= window.innerWidth"
        ),
        true,
        "the page overflows a 390 px window"
    );
    tab.set_bounds(Bounds::Normal {
        left: Some(0),
        top: Some(0),
        width: Some(f64::from(WIDTH)),
        height: Some(900.0),
    })
    .unwrap();

    // The date-range picker is a plain GET form.
    let today = today();
    eval(
        &tab,
        &format!("document.querySelector('input[name=from]').value = '{today}'; 0"),
    );
    tab.wait_for_element("form.range button[type=submit]")
        .unwrap()
        .click()
        .unwrap();
    tab.wait_until_navigated().unwrap();
    tab.wait_for_element("#stat-installs").unwrap();
    assert!(
        tab.get_url().contains(&format!("from={today}")),
        "{}",
        tab.get_url()
    );
    assert_eq!(text_of(&tab, "#stat-installs"), num(INSTALLS));
    assert_eq!(text_of(&tab, "#stat-completion"), COMPLETION);
    assert_eq!(
        eval(&tab, "document.querySelectorAll('#usage rect.bar').length"),
        1
    );

    // Sign out, and the dashboard is closed again.
    tab.wait_for_element("header button.link")
        .unwrap()
        .click()
        .unwrap();
    tab.wait_for_element("#token").unwrap();
    tab.navigate_to(&format!("{url}/dashboard"))
        .unwrap()
        .wait_until_navigated()
        .unwrap();
    assert!(
        tab.get_url().contains("/dashboard/login"),
        "{}",
        tab.get_url()
    );

    // The public page, signed out: noisy numbers and the line saying how noisy.
    tab.navigate_to(&format!("{url}/public/demo"))
        .unwrap()
        .wait_until_navigated()
        .unwrap();
    let line = text_of(&tab, "#noise-line");
    assert!(
        line.starts_with("Each weekly number is within ±") && line.contains("95% of the time"),
        "{line}"
    );
    assert_eq!(
        eval(
            &tab,
            "document.querySelector('#noise-line a').getAttribute('href').endsWith('PRIVACY.md#public-pages')"
        ),
        true
    );
    assert_eq!(
        eval(
            &tab,
            "document.querySelector('#stat-installs-all-time') === null"
        ),
        true,
        "no all-time total in public"
    );
    assert!(!tab.get_content().unwrap().contains(EMAIL));
    assert!(!dialogs.load(Ordering::SeqCst), "no script ran a dialog");

    drop(tab);
    drop(browser);
    stop.send(()).unwrap();
    runtime.block_on(server).unwrap().unwrap();
}
