//! The questions a person answers in a terminal: the first-run prompt, the
//! level chooser of `telemetry enable`, and the identity fields and
//! confirmation that `full` needs.
//!
//! The dialogues are written against any `BufRead`/`Write` pair so they can
//! be tested with strings; the public entry point wires them to stdin and
//! stderr (stdout stays free for the host's own output).

use std::collections::BTreeMap;
use std::io::{BufRead, Write};

use telemetry_protocol::{Manifest, Tier};

use crate::Telemetry;
use crate::control::Control;

use super::output::{Stream, Style};

/// How many unusable answers a question tolerates before it gives up and
/// takes its default, so a confused user or a stuck key never loops forever.
const ATTEMPTS: usize = 3;

/// Shows the first-run prompt if it is due, stores the answer, and returns it.
///
/// The prompt is due only when stdin and stderr are terminals, no CI is
/// detected, this tool has no stored choice and no ceiling rules telemetry
/// out ([`Control::should_prompt`]). It explains each level in one line from
/// the manifest, defaults to "no" (which stores `off`, so it is never shown
/// again) and writes only to stderr. Nothing is recorded or sent for the rest
/// of the run that shows it, whatever the answer: the choice applies from
/// the next run.
///
/// Call it once near the start of `main`, after building the handle, for
/// every command except the `telemetry` subcommand itself:
///
/// ```no_run
/// # use telemetry_client::Telemetry;
/// # let telemetry = Telemetry::builder("").build();
/// # let is_telemetry_command = false;
/// if !is_telemetry_command {
///     telemetry_client::cli::prompt_if_needed(&telemetry);
/// }
/// ```
///
/// Never fails and never panics: if the answer cannot be stored, one line
/// says so and the prompt is simply shown again next time.
pub fn prompt_if_needed(telemetry: &Telemetry) -> Option<Tier> {
    let control = telemetry.control().ok()?;
    if !control.should_prompt() {
        return None;
    }
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut output = std::io::stderr().lock();
    let style = Style::for_stream(Stream::Stderr);
    let (tier, identity) = first_run(&control, &style, &mut input, &mut output);
    let tool = control.tool();
    let stored = control.store_prompt_answer(tier, identity);
    // Whatever the answer, this run records and sends nothing. After
    // storing, because storing sets this run's ceiling to the answer.
    if let Ok(core) = &telemetry.core {
        core.changed(Some(Tier::Off));
    }
    let _ = match stored {
        Ok(()) if tier == Tier::Off => writeln!(
            output,
            "Telemetry stays off. Opt in any time with `{tool} telemetry enable`."
        ),
        Ok(()) => writeln!(
            output,
            "Saved: {}. It starts with the next run; `{tool} telemetry status` shows it, `{tool} telemetry disable` stops it.",
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

/// The first-run dialogue: returns the chosen level and, for `full`, the
/// identity. Any unusable or missing answer is "no", i.e. `off`.
pub(crate) fn first_run(
    control: &Control<'_>,
    style: &Style,
    input: &mut impl BufRead,
    output: &mut impl Write,
) -> (Tier, BTreeMap<String, String>) {
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
    let question = "Share usage data? [off/aggregate/anonymous/full] (default: off): ";
    let Some(tier) = choose(question, Tier::Off, input, output) else {
        return (Tier::Off, BTreeMap::new());
    };
    if tier != Tier::Full {
        return (tier, BTreeMap::new());
    }
    match full_dialogue(control.manifest(), BTreeMap::new(), style, input, output) {
        Some(identity) => (Tier::Full, identity),
        None => {
            let _ = writeln!(output, "Not confirmed.");
            (Tier::Off, BTreeMap::new())
        }
    }
}

/// One line per level, from the manifest; `mark_default` flags `off`.
pub(crate) fn levels(manifest: &Manifest, style: &Style, mark_default: bool) -> String {
    let mut text = String::new();
    for tier in Tier::ALL {
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

/// Asks for a level until one is given; an empty answer is `default`, and
/// end of input or too many unusable answers give `None`.
pub(crate) fn choose(
    question: &str,
    default: Tier,
    input: &mut impl BufRead,
    output: &mut impl Write,
) -> Option<Tier> {
    for _ in 0..ATTEMPTS {
        let answer = ask(question, input, output)?;
        let answer = answer.trim();
        if answer.is_empty()
            || answer.eq_ignore_ascii_case("n")
            || answer.eq_ignore_ascii_case("no")
        {
            return Some(default);
        }
        match answer.parse::<Tier>() {
            Ok(tier) => return Some(tier),
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
/// read error.
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
            let got = choose("? ", Tier::Off, &mut input.as_bytes(), &mut out);
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
    fn levels_come_from_the_manifest() {
        let manifest = Manifest::parse(MANIFEST).unwrap();
        let text = levels(&manifest, &plain(), true);
        assert_eq!(text.lines().count(), 4);
        assert!(text.contains("aggregate  Counts of commands."), "{text}");
        assert!(text.contains("off        Nothing is recorded or sent. (default)"));
    }
}
