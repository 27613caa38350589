//! The system's `curl` program as the transport: the binary holds no HTTP
//! or TLS code, and curl brings the platform's trust store. Only the
//! detached uploader (and `flush`) runs it, never the host's own path.
//!
//! Where curl is missing, nothing is sent: the request fails with a reason
//! that the upload log keeps and `status` shows, and stays queued.

use std::ffi::OsString;
use std::io::{self, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{MAX_RESPONSE_BYTES, Route, USER_AGENT, outcome};
use crate::upload::{Outcome, Transport};

/// Why nothing was sent when the program is not there.
pub(crate) const MISSING: &str =
    "curl not found: the `curl` transport needs the system's curl program; nothing was sent";

/// HTTPS (or loopback HTTP) through a `curl` process per request.
pub(super) struct Curl {
    route: Route,
    program: OsString,
}

impl Curl {
    /// A client for `route`, running the `curl` found on `PATH`.
    pub(super) fn new(route: Route) -> Curl {
        Curl {
            route,
            program: "curl".into(),
        }
    }

    /// The arguments of one request to `url`; the body comes on stdin.
    fn args(&self, url: &str) -> Vec<OsString> {
        let secs = |d: Duration| format!("{:.3}", d.as_secs_f64());
        let mut args: Vec<OsString> = [
            // First, or it does nothing: ignore ~/.curlrc, whose options
            // (`--fail`, `-o`, `-L`) would change what this parses.
            "-q",
            "--silent",
            "--show-error",
            // The status line and headers, for the status and Retry-After.
            "--include",
            "--suppress-connect-headers",
            "--request",
            "POST",
            "--data-binary",
            "@-",
            "--header",
            "content-type: application/json",
            "--user-agent",
            USER_AGENT,
            // Never follow a redirect off the configured host, nor speak
            // anything but HTTP(S).
            "--max-redirs",
            "0",
            "--proto",
            "=http,https",
            "--max-filesize",
        ]
        .map(OsString::from)
        .to_vec();
        args.push(MAX_RESPONSE_BYTES.to_string().into());
        args.push("--connect-timeout".into());
        args.push(secs(self.route.connect_timeout()).into());
        args.push("--max-time".into());
        args.push(secs(self.route.total).into());
        // The route decides, as for the other transports: curl's own
        // reading of the variables differs (no uppercase HTTP_PROXY).
        match &self.route.proxy {
            Some(proxy) => args.extend(["--proxy".into(), proxy.into()]),
            None => args.extend(["--noproxy".into(), "*".into()]),
        }
        // After `--url`, an endpoint starting with `-` is still a URL.
        args.extend(["--url".into(), url.into()]);
        args
    }
}

impl Transport for Curl {
    fn post(&self, path: &str, body: &[u8]) -> Outcome {
        let url = format!("{}{path}", self.route.base);
        let child = Command::new(&self.program)
            .args(self.args(&url))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match child {
            Ok(child) => child,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Outcome::Failed(MISSING.into());
            }
            Err(e) => return Outcome::Failed(format!("cannot run curl: {e}")),
        };
        // curl reads all of stdin before it connects, so writing it first
        // cannot deadlock on its output. A curl that exits early closes the
        // pipe; its exit status then says why.
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(body);
        }
        let output = match child.wait_with_output() {
            Ok(output) => output,
            Err(e) => return Outcome::Failed(format!("curl failed: {e}")),
        };
        match output.status.code() {
            Some(0) => match parse(&output.stdout) {
                Some((status, retry_after, body)) => {
                    outcome(status, retry_after.as_deref(), Some(body))
                }
                None => Outcome::Failed("curl printed no HTTP response".into()),
            },
            Some(28) => Outcome::Failed("timed out".into()),
            Some(6 | 7) => Outcome::Failed("cannot connect".into()),
            code => {
                let stderr = String::from_utf8_lossy(&output.stderr);
                let why = stderr.lines().next().unwrap_or_default().trim();
                match code {
                    Some(code) => Outcome::Failed(format!("curl exit {code}: {why}")),
                    None => Outcome::Failed("curl was killed".into()),
                }
            }
        }
    }
}

/// The final response in curl's `--include` output: its status, its
/// `Retry-After`, and the body. Interim responses (`100 Continue`, a
/// proxy's `200 Connection established` on curls that print it) come first
/// and are skipped.
fn parse(out: &[u8]) -> Option<(u16, Option<String>, &[u8])> {
    let mut rest = out;
    loop {
        let (head, body) = split_head(rest)?;
        let head = std::str::from_utf8(head).ok()?;
        let mut lines = head.lines();
        let status: u16 = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
        // The collector's 2xx bodies are JSON, never another status line.
        if status < 300 && body.starts_with(b"HTTP/") {
            rest = body;
            continue;
        }
        let retry_after = lines.find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("retry-after")
                .then(|| value.trim().to_owned())
        });
        return Some((status, retry_after, body));
    }
}

/// A response's head and what follows its blank line.
fn split_head(out: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = out.windows(4).position(|w| w == b"\r\n\r\n")?;
    Some((&out[..at], &out[at + 4..]))
}

#[cfg(test)]
impl Curl {
    /// Runs `program` instead of the `curl` on `PATH`.
    pub(super) fn with_program(route: Route, program: impl Into<OsString>) -> Curl {
        Curl {
            route,
            program: program.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_final_response_is_parsed_past_interim_ones() {
        let out = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 Connection established\r\n\r\nHTTP/2 429 \r\ncontent-type: application/json\r\nRetry-After: 120\r\n\r\n{\"error\":\"rate_limited\"}";
        let (status, retry, body) = parse(out).unwrap();
        assert_eq!(status, 429);
        assert_eq!(retry.as_deref(), Some("120"));
        assert_eq!(body, b"{\"error\":\"rate_limited\"}");
        let (status, retry, body) = parse(b"HTTP/1.1 202 Accepted\r\n\r\n").unwrap();
        assert_eq!((status, retry, body), (202, None, &b""[..]));
        assert_eq!(parse(b"garbage"), None);
    }
}
