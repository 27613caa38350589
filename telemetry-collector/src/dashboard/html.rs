//! HTML building blocks: escaping, number formatting and the page frame.
//!
//! Every string that reached the collector from a client (event names,
//! versions, OS and arch names, project names in open mode) is written through
//! [`Esc`], which escapes the five characters that matter in HTML text and
//! attribute values. Page code writes client values only with `{}` of an
//! [`Esc`], never raw, so that a hostile event name such as
//! `<script>alert(1)</script>` is shown as text. The same escaping is valid
//! inside inline SVG, which is parsed as part of the HTML document.

use std::fmt::{self, Write as _};

/// The stylesheet's URL; it is served by the dashboard itself.
pub const STYLESHEET_PATH: &str = "/assets/dashboard.css";
/// The icon's URL, served by the dashboard so the browser does not ask for a missing `/favicon.ico`.
pub const ICON_PATH: &str = "/assets/icon.svg";

/// Displays a string escaped for HTML text and double- or single-quoted attributes.
#[derive(Debug, Clone, Copy)]
pub struct Esc<'a>(pub &'a str);

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(i) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..i])?;
            f.write_str(match rest.as_bytes()[i] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            })?;
            rest = &rest[i + 1..];
        }
        f.write_str(rest)
    }
}

/// `s` escaped for HTML, as an owned string.
pub fn esc(s: &str) -> String {
    Esc(s).to_string()
}

/// Percent-encodes `s` for use as one URL path segment or query value.
///
/// Only RFC 3986 unreserved characters pass through, so the result is also
/// safe inside an HTML attribute without further escaping.
pub fn url_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A count with thin thousands separators: `12,345`.
pub fn num(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A ratio as a percentage with one decimal, or an em dash when there is no ratio.
pub fn pct(ratio: Option<f64>) -> String {
    match ratio {
        Some(r) if r.is_finite() => format!("{:.1}%", r * 100.0),
        _ => "—".to_owned(),
    }
}

/// `part / whole`, or `None` when `whole` is zero.
pub fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

/// Truncates `s` to at most `max` characters, marking the cut with an ellipsis.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

/// Which part of the site a page belongs to, for the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chrome {
    /// A page for a signed-in maintainer: the header has the overview link and sign-out.
    Admin,
    /// A public page or the sign-in page: no admin links.
    Plain,
}

/// Wraps `body` in the full HTML document every page shares.
///
/// `title` is escaped here; `body` must already be safe markup.
pub fn page(title: &str, chrome: Chrome, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 1024);
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"color-scheme\" content=\"light dark\">\n\
         <meta name=\"referrer\" content=\"same-origin\">\n\
         <title>{} · telemetry</title>\n\
         <link rel=\"stylesheet\" href=\"{STYLESHEET_PATH}\">\n\
         <link rel=\"icon\" href=\"{ICON_PATH}\" type=\"image/svg+xml\">\n\
         </head>\n<body>\n<header class=\"site\">\n",
        Esc(title)
    );
    match chrome {
        Chrome::Admin => out.push_str(
            "<a class=\"brand\" href=\"/dashboard\">telemetry</a>\n\
             <nav><a href=\"/dashboard\">All projects</a>\n\
             <form method=\"post\" action=\"/dashboard/logout\" class=\"inline\">\
             <button type=\"submit\" class=\"link\">Sign out</button></form></nav>\n",
        ),
        Chrome::Plain => out.push_str("<span class=\"brand\">telemetry</span>\n"),
    }
    out.push_str("</header>\n<main>\n");
    out.push_str(body);
    out.push_str("</main>\n</body>\n</html>\n");
    out
}

/// A page that only states a problem, such as an unknown project or a bad date.
pub fn message_page(title: &str, chrome: Chrome, message: &str) -> String {
    let body = format!(
        "<h1>{}</h1>\n<p class=\"message\">{}</p>\n",
        Esc(title),
        Esc(message)
    );
    page(title, chrome, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_every_character_that_matters_in_html() {
        let table = [
            ("plain", "plain"),
            (
                "<script>alert(1)</script>",
                "&lt;script&gt;alert(1)&lt;/script&gt;",
            ),
            (
                "<img src=x onerror=alert(1)>",
                "&lt;img src=x onerror=alert(1)&gt;",
            ),
            ("a\"b'c&d", "a&quot;b&#39;c&amp;d"),
            ("&amp;", "&amp;amp;"),
            ("ünï", "ünï"),
        ];
        for (input, expected) in table {
            assert_eq!(esc(input), expected, "{input}");
        }
    }

    #[test]
    fn url_components_keep_only_unreserved_characters() {
        assert_eq!(url_component("demo-cli_1.0~x"), "demo-cli_1.0~x");
        assert_eq!(url_component("a b/c?d\"<"), "a%20b%2Fc%3Fd%22%3C");
        assert_eq!(url_component("é"), "%C3%A9");
    }

    #[test]
    fn numbers_and_percentages() {
        let table = [
            (0, "0"),
            (7, "7"),
            (999, "999"),
            (1000, "1,000"),
            (1_234_567, "1,234,567"),
        ];
        for (n, s) in table {
            assert_eq!(num(n), s);
        }
        assert_eq!(pct(Some(0.5)), "50.0%");
        assert_eq!(pct(Some(2.0 / 3.0)), "66.7%");
        assert_eq!(pct(None), "—");
        assert_eq!(ratio(1, 0), None);
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
    }

    #[test]
    fn the_page_title_is_escaped() {
        let html = page("<b>x</b>", Chrome::Plain, "<p>body</p>");
        assert!(html.contains("<title>&lt;b&gt;x&lt;/b&gt; · telemetry</title>"));
        assert!(html.contains("<p>body</p>"));
        assert!(!html.contains("Sign out"));
        assert!(page("t", Chrome::Admin, "").contains("Sign out"));
    }
}
