//! The questions a person answers in a terminal: the first-run prompt, the
//! level chooser of `telemetry enable`, and the identity fields and
//! confirmation that `full` needs.
//!
//! The dialogues are written against any `BufRead`/`Write` pair so they can
//! be tested with strings; the public entry point wires them to stdin and
//! stderr (stdout stays free for the host's own output).

use std::collections::BTreeMap;
use std::io::{BufRead, Read, Write};
use std::time::{Duration, Instant};

use telemetry_protocol::{Manifest, Tier};

use crate::Telemetry;
use crate::control::Control;

use super::output::{Stream, Style};

/// How many unusable answers a question of `telemetry enable` tolerates before it gives up and
/// takes its default, so a confused user or a stuck key never loops forever.
pub(crate) const ATTEMPTS: usize = 3;

/// Shows the first-run prompt if it is due for `command`, stores the answer,
/// and returns it.
///
/// `command` is the name of the command this run executes; the prompt is
/// only considered for the commands the author named with
/// [`crate::Builder::prompt_commands`] (never for `telemetry`). It is due
/// only when a person is talking to the tool: stdin, stdout and stderr are
/// terminals, the process is in the terminal's foreground process group, no
/// CI is detected, this tool has no stored choice, no ceiling rules telemetry
/// out, it was not shown before in this run, and it was not left unanswered
/// in the last week ([`Control::should_prompt`]).
///
/// It explains each level in one line from the manifest, defaults to "no"
/// (an empty answer stores `off`, so it is never shown again) and writes only
/// to stderr. The answer applies at once: what the rest of this run records
/// (its setup events above all) is recorded at the chosen level, and nothing
/// from before the answer is ever sent. No answer within 30 seconds, end of input, or an answer that is
/// not a level ends it at once: nothing is stored but the time it was asked,
/// and it is not shown again for a week.
///
/// ```no_run
/// # use telemetry_client::Telemetry;
/// let telemetry = Telemetry::builder("") // include_str!("../telemetry.toml")
///     .prompt_commands(["init"])
///     .build();
/// # let command = "init";
/// telemetry_client::cli::prompt_if_needed(&telemetry, command);
/// ```
///
/// Never fails and never panics: if the answer cannot be stored, one line
/// says so and the prompt is simply shown again next time.
pub fn prompt_if_needed(telemetry: &Telemetry, command: &str) -> Option<Tier> {
    // Asked first, so that a run which cannot prompt (a shell hook, a
    // script) does not make the core, and so parses no manifest, at `off`.
    if !telemetry.may_prompt(command) {
        return None;
    }
    let control = telemetry.control().ok()?;
    let core = telemetry.ready()?;
    if !control.should_prompt() {
        return None;
    }
    core.prompted
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let mut input = std::io::BufReader::new(TimedStdin {
        timeout: core.prompt_timeout,
    });
    let mut output = std::io::stderr().lock();
    let style = Style::for_stream(Stream::Stderr);
    let tool = control.tool();
    let Some((tier, identity)) = first_run(&control, &style, &mut input, &mut output) else {
        let _ = control.note_unanswered();
        let _ = writeln!(
            output,
            "Telemetry stays off, and {tool} will not ask again this week. Opt in any time with `{tool} telemetry enable`."
        );
        return None;
    };
    let stored = control.store_prompt_answer(tier, identity);
    // The answer holds for the rest of this run: a user who opts in while
    // setting the tool up has that setup counted.
    if stored.is_ok() {
        core.adopt_answer();
    }
    let _ = match stored {
        Ok(()) if tier == Tier::Off => writeln!(
            output,
            "Telemetry stays off. Opt in any time with `{tool} telemetry enable`."
        ),
        Ok(()) => writeln!(
            output,
            "Saved: {}, from now on. `{tool} telemetry status` shows it, `{tool} telemetry disable` stops it.",
            style.bold(tier.as_str())
        ),
        Err(e) => writeln!(
            output,
            "{} cannot save your answer: {e}",
            style.red("telemetry:")
        ),
    };
    Some(tier)
}

/// Stdin read straight from the file descriptor, each read waiting at most
/// `timeout` for input, so an unattended prompt ends instead of blocking
/// the tool (and whoever waits on it) for ever.
struct TimedStdin {
    timeout: Duration,
}

impl Read for TimedStdin {
    #[cfg(unix)]
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use rustix::event::{PollFd, PollFlags, Timespec, poll};
        let stdin = std::io::stdin();
        let deadline = Instant::now() + self.timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let timespec = Timespec {
                tv_sec: i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
                tv_nsec: i64::from(left.subsec_nanos()),
            };
            let mut fds = [PollFd::new(&stdin, PollFlags::IN)];
            match poll(&mut fds, Some(&timespec)) {
                Ok(0) => return Err(std::io::ErrorKind::TimedOut.into()),
                Ok(_) => break,
                // A signal such as SIGWINCH (a resized window) is not an answer.
                Err(rustix::io::Errno::INTR) if !left.is_zero() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        // Straight from the descriptor: std's own stdin buffer is bypassed so
        // that nothing typed is held back where `poll` cannot see it.
        Ok(rustix::io::read(&stdin, buf)?)
    }

    #[cfg(not(unix))]
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        std::io::stdin().read(buf)
    }
}

/// The first-run dialogue: returns the chosen level and, for `full`, the
/// identity; an unconfirmed `full` is "no", i.e. `off`. `None` when there was
/// no usable answer: end of input, a timeout, or an answer that is not a level.
pub(crate) fn first_run(
    control: &Control<'_>,
    style: &Style,
    input: &mut impl BufRead,
    output: &mut impl Write,
) -> Option<(Tier, BTreeMap<String, String>)> {
    let tool = control.tool();
    let _ = writeln!(
        output,
        "{} can send usage telemetry to its maintainers. Nothing is sent unless you choose a level:",
        style.bold(tool)
    );
    let _ = write!(output, "{}", levels(control.manifest(), style, true));
    let _ = writeln!(
        output,
        "{}",
        style.dim(&format!(
            "Change it any time with `{tool} telemetry enable` or `{tool} telemetry disable`."
        ))
    );
    let offered = offered(control.manifest());
    let question = format!("Share usage data? [{}] (default: off): ", slashed(&offered));
    // One attempt: text that is not a level is most likely not meant for
    // this question at all (a command typed ahead), so it ends the prompt.
    let tier = choose(&question, Tier::Off, &offered, 1, input, output)?;
    if tier != Tier::Full {
        return Some((tier, BTreeMap::new()));
    }
    match full_dialogue(control.manifest(), BTreeMap::new(), style, input, output) {
        Some(identity) => Some((Tier::Full, identity)),
        None => {
            let _ = writeln!(output, "Not confirmed.");
            Some((Tier::Off, BTreeMap::new()))
        }
    }
}

/// The levels a user is offered: `full` only when the manifest declares
/// identity fields, since without them it sends nothing `anonymous` does not.
pub(crate) fn offered(manifest: &Manifest) -> Vec<Tier> {
    Tier::ALL
        .into_iter()
        .filter(|t| *t != Tier::Full || !manifest.identity.is_empty())
        .collect()
}

/// `a/b/c`, for a question's list of answers.
pub(crate) fn slashed(tiers: &[Tier]) -> String {
    let names: Vec<&str> = tiers.iter().map(|t| t.as_str()).collect();
    names.join("/")
}

/// One line per offered level, from the manifest; `mark_default` flags `off`.
pub(crate) fn levels(manifest: &Manifest, style: &Style, mark_default: bool) -> String {
    let mut text = String::new();
    for tier in offered(manifest) {
        let name = format!("{:<9}", tier.as_str());
        let default = if mark_default && tier == Tier::Off {
            " (default)"
        } else {
            ""
        };
        text.push_str(&format!(
            "  {}  {}{default}\n",
            style.bold(&name),
            manifest.tier_summary(tier)
        ));
    }
    text
}

/// Asks for one of the `offered` levels until one is given; an empty answer
/// is `default`, and end of input or `attempts` unusable answers give `None`.
pub(crate) fn choose(
    question: &str,
    default: Tier,
    offered: &[Tier],
    attempts: usize,
    input: &mut impl BufRead,
    output: &mut impl Write,
) -> Option<Tier> {
    for _ in 0..attempts {
        let answer = ask(question, input, output)?;
        let answer = answer.trim();
        if answer.is_empty()
            || answer.eq_ignore_ascii_case("n")
            || answer.eq_ignore_ascii_case("no")
        {
            return Some(default);
        }
        match answer.parse::<Tier>() {
            Ok(tier) if offered.contains(&tier) => return Some(tier),
            Ok(tier) => {
                let _ = writeln!(
                    output,
                    "`{tier}` is not offered here; choose one of {}",
                    slashed(offered)
                );
            }
            Err(e) => {
                let _ = writeln!(output, "{e}");
            }
        }
    }
    None
}

/// For `full`: asks for every identity field not already in `preset`, shows
/// what will be sent, and returns the identity only on an explicit `yes`.
pub(crate) fn full_dialogue(
    manifest: &Manifest,
    mut identity: BTreeMap<String, String>,
    style: &Style,
    input: &mut impl BufRead,
    output: &mut impl Write,
) -> Option<BTreeMap<String, String>> {
    if !manifest.identity.is_empty() {
        let _ = writeln!(
            output,
            "`full` sends what you type here with every event. Leave a field empty to skip it."
        );
    }
    for (name, field) in &manifest.identity {
        if identity.contains_key(name) {
            continue;
        }
        let question = format!(
            "  {} ({}, at most {} characters): ",
            style.bold(name),
            field.description,
            field.max_len
        );
        let mut value = None;
        for _ in 0..ATTEMPTS {
            let answer = ask(&question, input, output)?;
            let answer = answer.trim().to_owned();
            if answer.chars().count() <= field.max_len {
                value = Some(answer);
                break;
            }
            let _ = writeln!(
                output,
                "  That is longer than {} characters.",
                field.max_len
            );
        }
        let value = value?;
        if !value.is_empty() {
            identity.insert(name.clone(), value);
        }
    }
    let _ = writeln!(output, "With every event, `full` will send:");
    let _ = writeln!(output, "  {}", manifest.tier_summary(Tier::Full));
    for name in manifest.identity.keys() {
        let shown = identity
            .get(name)
            .map_or_else(|| "(not sent)".to_owned(), |v| format!("{v:?}"));
        let _ = writeln!(output, "  {name} = {shown}");
    }
    let answer = ask("Type `yes` to confirm: ", input, output)?;
    answer
        .trim()
        .eq_ignore_ascii_case("yes")
        .then_some(identity)
}

/// Writes `question` and reads one line; `None` at end of input or on a
/// read error (a timeout included).
fn ask(question: &str, input: &mut impl BufRead, output: &mut impl Write) -> Option<String> {
    let _ = write!(output, "{question}");
    let _ = output.flush();
    let mut line = String::new();
    match input.read_line(&mut line) {
        Ok(0) | Err(_) => {
            let _ = writeln!(output);
            None
        }
        Ok(_) => Some(line),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"
project = "p-cli"
endpoint = "https://t.example.org"

[tiers]
aggregate = "Counts of commands."

[events.command]
description = "A command ran"

[identity.email]
description = "An address"
max_len = 5
"#;

    fn plain() -> Style {
        Style::for_stream(Stream::Stderr).plain()
    }

    #[test]
    fn choose_defaults_parses_and_gives_up() {
        let mut out = Vec::new();
        for (input, expected) in [
            ("\n", Some(Tier::Off)),
            ("no\n", Some(Tier::Off)),
            (" Aggregate \n", Some(Tier::Aggregate)),
            ("lots\nfull\n", Some(Tier::Full)),
            ("a\nb\nc\nfull\n", None),
            ("", None),
        ] {
            let got = choose(
                "? ",
                Tier::Off,
                &Tier::ALL,
                ATTEMPTS,
                &mut input.as_bytes(),
                &mut out,
            );
            assert_eq!(got, expected, "{input:?}");
        }
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("valid levels are: off, aggregate, anonymous, full"));
    }

    #[test]
    fn full_needs_a_yes_and_respects_max_len() {
        let manifest = Manifest::parse(MANIFEST).unwrap();
        let mut out = Vec::new();
        let got = full_dialogue(
            &manifest,
            BTreeMap::new(),
            &plain(),
            &mut "toolong\na@b\nyes\n".as_bytes(),
            &mut out,
        );
        assert_eq!(
            got,
            Some(BTreeMap::from([("email".to_owned(), "a@b".to_owned())]))
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("longer than 5"), "{text}");
        assert!(text.contains("email = \"a@b\""), "{text}");
        let refused = full_dialogue(
            &manifest,
            BTreeMap::new(),
            &plain(),
            &mut "a@b\ny\n".as_bytes(),
            &mut Vec::new(),
        );
        assert_eq!(refused, None, "only `yes` confirms");
        let preset = BTreeMap::from([("email".to_owned(), "x@y".to_owned())]);
        let got = full_dialogue(
            &manifest,
            preset.clone(),
            &plain(),
            &mut "yes\n".as_bytes(),
            &mut Vec::new(),
        );
        assert_eq!(got, Some(preset), "preset fields are not asked again");
    }

    #[test]
    fn full_is_not_offered_without_identity_fields() {
        let without = &MANIFEST[..MANIFEST.find("[identity.email]").unwrap()];
        let manifest = Manifest::parse(without).unwrap();
        assert!(manifest.identity.is_empty());
        assert_eq!(
            offered(&manifest),
            [Tier::Off, Tier::Aggregate, Tier::Anonymous]
        );
        let text = levels(&manifest, &plain(), true);
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(!text.contains("full"), "{text}");
        let mut out = Vec::new();
        let choices = offered(&manifest);
        let got = choose(
            "? ",
            Tier::Off,
            &choices,
            2,
            &mut "full\nanonymous\n".as_bytes(),
            &mut out,
        );
        assert_eq!(got, Some(Tier::Anonymous));
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("`full` is not offered here; choose one of off/aggregate/anonymous"),
            "{text}"
        );
        assert_eq!(offered(&Manifest::parse(MANIFEST).unwrap()), Tier::ALL);
    }

    #[test]
    fn levels_come_from_the_manifest() {
        let manifest = Manifest::parse(MANIFEST).unwrap();
        let text = levels(&manifest, &plain(), true);
        assert_eq!(text.lines().count(), 4);
        assert!(text.contains("aggregate  Counts of commands."), "{text}");
        assert!(text.contains("off        Nothing is recorded or sent. (default)"));
    }
}
