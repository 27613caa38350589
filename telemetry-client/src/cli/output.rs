//! Terminal output for the `telemetry` subcommand and `telemetry-consent`:
//! aligned key/value lines and tables, colour only when the stream is a
//! terminal and `NO_COLOR` is unset, and writes that never panic.
//!
//! Writes ignore errors on purpose: a closed pipe (`status | head -1`) must
//! not turn into a panic in the host, which `println!` would do.

use std::io::{IsTerminal, Write};

/// Which standard stream a piece of output goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    /// Results the user asked for.
    Stdout,
    /// Prompts, notes and errors.
    Stderr,
}

/// Colours for one stream, decided once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Style {
    color: bool,
}

impl Style {
    /// The style for `stream`: colour only on a terminal, and never with
    /// `NO_COLOR` set to a non-empty value (<https://no-color.org>) or a dumb
    /// terminal.
    pub(crate) fn for_stream(stream: Stream) -> Style {
        let tty = match stream {
            Stream::Stdout => std::io::stdout().is_terminal(),
            Stream::Stderr => std::io::stderr().is_terminal(),
        };
        Style {
            color: color_allowed(
                tty,
                std::env::var_os("NO_COLOR").as_deref(),
                std::env::var_os("TERM").as_deref(),
            ),
        }
    }

    /// The same style without colour (tests, and text for files).
    #[cfg(test)]
    pub(crate) fn plain(self) -> Style {
        Style { color: false }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    /// Headings and values that matter most.
    pub(crate) fn bold(&self, text: &str) -> String {
        self.paint("1", text)
    }

    /// Good news: a level that is on, a delivered upload.
    pub(crate) fn green(&self, text: &str) -> String {
        self.paint("32", text)
    }

    /// Something to notice: a ceiling in force, a deferred upload.
    pub(crate) fn yellow(&self, text: &str) -> String {
        self.paint("33", text)
    }

    /// Errors.
    pub(crate) fn red(&self, text: &str) -> String {
        self.paint("31", text)
    }

    /// Secondary text: hints, paths.
    pub(crate) fn dim(&self, text: &str) -> String {
        self.paint("2", text)
    }
}

/// Whether colour may be used on a stream.
pub(crate) fn color_allowed(
    tty: bool,
    no_color: Option<&std::ffi::OsStr>,
    term: Option<&std::ffi::OsStr>,
) -> bool {
    tty && no_color.is_none_or(|v| v.is_empty()) && term.is_none_or(|t| t != "dumb")
}

/// Writes `text` to `stream`, ignoring failures (see the module doc).
pub(crate) fn write(stream: Stream, text: &str) {
    let _ = match stream {
        Stream::Stdout => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes()).and_then(|()| out.flush())
        }
        Stream::Stderr => {
            let mut err = std::io::stderr().lock();
            err.write_all(text.as_bytes()).and_then(|()| err.flush())
        }
    };
}

/// Writes one line to stdout.
pub(crate) fn out(line: &str) {
    write(Stream::Stdout, &format!("{line}\n"));
}

/// Writes one line to stderr.
pub(crate) fn err(line: &str) {
    write(Stream::Stderr, &format!("{line}\n"));
}

/// Prints `error: <message>` and an optional hint saying what to do.
pub(crate) fn error(message: &str, hint: Option<&str>) {
    let style = Style::for_stream(Stream::Stderr);
    err(&format!("{} {message}", style.red(&style.bold("error:"))));
    if let Some(hint) = hint {
        err(&format!("  {}", style.dim(hint)));
    }
}

/// Key/value lines with the values aligned, indented by two spaces. Keys are
/// padded before styling so escape codes never break the alignment.
pub(crate) fn aligned(style: &Style, rows: &[(&str, String)]) -> String {
    let width = rows
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    let mut text = String::new();
    for (key, value) in rows {
        let padded = format!("{key:<width$}");
        text.push_str(&format!("  {}  {value}\n", style.dim(&padded)));
    }
    text
}

/// A table with a header row; every column but the last is padded.
pub(crate) fn table(style: &Style, header: &[&str], rows: &[Vec<String>]) -> String {
    let columns = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(columns) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>, paint: &dyn Fn(&str) -> String| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let last = i + 1 == cells.len();
            let padded = if last {
                cell.clone()
            } else {
                format!("{cell:<w$}", w = widths[i])
            };
            text.push_str(&paint(&padded));
            if !last {
                text.push_str("  ");
            }
        }
        text.trim_end().to_owned() + "\n"
    };
    let mut text = line(header.iter().map(|h| (*h).to_owned()).collect(), &|s| {
        style.bold(s)
    });
    for row in rows {
        text.push_str(&line(row.clone(), &|s| s.to_owned()));
    }
    text
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        let dumb = Some(OsStr::new("dumb"));
        let xterm = Some(OsStr::new("xterm"));
        for (tty, no_color, term, expected) in [
            (true, None, xterm, true),
            (true, Some(OsStr::new("")), xterm, true),
            (true, Some(OsStr::new("1")), xterm, false),
            (false, None, xterm, false),
            (true, None, dumb, false),
            (true, None, None, true),
        ] {
            assert_eq!(
                color_allowed(tty, no_color, term),
                expected,
                "{tty} {no_color:?} {term:?}"
            );
        }
    }

    #[test]
    fn aligned_values_start_in_one_column() {
        let plain = Style { color: false };
        let text = aligned(
            &plain,
            &[("level", "off".into()), ("install id", "none".into())],
        );
        assert_eq!(text, "  level       off\n  install id  none\n");
        let coloured = Style { color: true };
        let text = aligned(&coloured, &[("a", "1".into()), ("bbb", "2".into())]);
        assert!(text.contains("\x1b[2ma  \x1b[0m  1"), "{text:?}");
    }

    #[test]
    fn tables_pad_every_column_but_the_last() {
        let plain = Style { color: false };
        let text = table(
            &plain,
            &["TOOL", "LEVEL", "NOTE"],
            &[
                vec!["a".into(), "anonymous".into(), "x".into()],
                vec!["long-name".into(), "off".into(), String::new()],
            ],
        );
        assert_eq!(
            text,
            "TOOL       LEVEL      NOTE\na          anonymous  x\nlong-name  off\n"
        );
    }
}
