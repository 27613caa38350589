//! `POST /v1/ingest` and `POST /v1/delete`: the only endpoints clients call.
//!
//! Each request passes, in order: the per-source rate limit (429), the
//! content type and encoding (415), the body limit before and after gunzip
//! (413), JSON parsing (400; fields the protocol does not define are ignored
//! and counted), the tier policy and the project (422 for the whole request:
//! a field above the claimed tier, a malformed id or value, an unknown
//! project), then per item ([`crate::skew`]): `max_tier` downgrades, and an
//! item the manifest does not declare or whose time is out of range is
//! refused on its own. Then the cardinality caps (values past them fold into
//! `(other)`; in open mode a new project past its cap gets 429). Only then is
//! anything handed to the store, and the answer waits for the commit, so a
//! 2xx means the data (and the count of what was refused) is on disk, even
//! when every item was refused. Nothing of a 4xx request is stored, and no
//! header or address is logged or kept: the source address is used as a
//! rate-limit key in memory and dropped.

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
use axum::extract::{ConnectInfo, FromRequest, Request, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use telemetry_protocol::policy::is_project_name;
use telemetry_protocol::wire::record_ignored;
use telemetry_protocol::{
    Day, DeleteRequest, ErrorCode, IgnoredFields, IngestPayload, IngestResponse, Tier, Timestamp,
    Violation, ViolationCode, Violations, validate,
};

use crate::error::ApiError;
use crate::state::AppState;
use crate::store::StoreError;

/// Today's UTC day by the system clock.
pub fn today() -> Day {
    Timestamp::from_unix_millis(now_millis()).day()
}

/// `POST /v1/ingest`.
pub(crate) async fn ingest(State(state): State<AppState>, request: Request) -> Response {
    match ingest_inner(&state, request).await {
        Ok(answer) => {
            state.metrics().request("ingest", "accepted");
            state.metrics().items(answer.accepted, answer.duplicates);
            Json(answer).into_response()
        }
        Err(e) => {
            state.metrics().request("ingest", e.code());
            e.into_response()
        }
    }
}

async fn ingest_inner(state: &AppState, request: Request) -> Result<IngestResponse, ApiError> {
    let (payload, ignored) = read_payload(state, request).await?;
    check_request(state, &payload)?;
    let install = payload
        .install_id
        .map(|id| state.hasher().hash(&payload.project, &id));
    let project = state.project(&payload.project);
    let limits = crate::skew::Limits {
        manifest: project.map(|p| &p.manifest),
        max_tier: project.map_or(Tier::Full, |p| p.max_tier),
        retention_days: project.map_or(state.default_retention_days(), |p| p.retention_days),
    };
    let crate::skew::Accepted {
        mut batch,
        mut skew,
        mut answer,
    } = crate::skew::accept(payload, install, ignored, limits, now_millis());
    state.cardinality().fold(&mut batch, state.metrics())?;
    state.skew().record(state.metrics(), &batch, &mut skew);
    let outcome = state.store().ingest_checked(batch, skew).await;
    note_storage(state, &outcome);
    let outcome = outcome.map_err(store_error)?;
    answer.accepted = outcome.accepted;
    answer.duplicates = outcome.duplicates;
    Ok(answer)
}

/// The system clock in milliseconds since the epoch.
fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// `POST /v1/delete`. Answers the same whether or not the install was known,
/// so it cannot be used to learn whether an id ever sent anything.
pub(crate) async fn delete(State(state): State<AppState>, request: Request) -> Response {
    let result = async {
        let body: DeleteRequest = read_json(&state, request).await?;
        if !is_project_name(&body.project) {
            return Err(ApiError::policy(vec![Violation::new(
                "project",
                ViolationCode::InvalidName,
                "project must match [a-z0-9][a-z0-9_-]* and be at most 64 bytes",
            )]));
        }
        let install = state.hasher().hash(&body.project, &body.install_id);
        let result = state.store().delete_install(&body.project, install).await;
        note_storage(&state, &result);
        result.map_err(store_error)
    }
    .await;
    match result {
        Ok(()) => {
            state.metrics().request("delete", "accepted");
            Json(serde_json::json!({ "status": "ok" })).into_response()
        }
        Err(e) => {
            state.metrics().request("delete", e.code());
            e.into_response()
        }
    }
}

/// Tells `/metrics` whether storage took a write: a full disk shows as
/// `telemetry_storage_unavailable 1` until a write commits again. Other
/// failures (a full queue) say nothing about the disk and change nothing.
fn note_storage<T>(state: &AppState, result: &Result<T, StoreError>) {
    match result {
        Ok(_) => state.metrics().storage_unavailable(false),
        Err(StoreError::Unavailable(_)) => state.metrics().storage_unavailable(true),
        Err(_) => {}
    }
}

/// The `Retry-After` of a 503 for a full or failing disk.
pub const STORAGE_RETRY_AFTER: Duration = Duration::from_secs(60);

fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::QueueFull => {
            ApiError::new(ErrorCode::Overloaded, "the collector is busy; retry later")
                .retry_after(Duration::from_secs(1))
        }
        StoreError::Closed => ApiError::new(
            ErrorCode::Overloaded,
            "the collector is shutting down; retry later",
        )
        .retry_after(Duration::from_secs(5)),
        StoreError::Unavailable(reason) => {
            // Nothing was stored, and the client must not drop its data: a
            // 503 keeps it spooled until an operator frees space. The wait is
            // long because that takes a person, not a moment.
            tracing::error!(error = %reason, "the storage cannot take writes; answering 503");
            ApiError::new(
                ErrorCode::Overloaded,
                "the collector cannot store data now (its disk is full); nothing was stored; retry later",
            )
            .retry_after(STORAGE_RETRY_AFTER)
        }
        other => {
            tracing::error!(error = %other, "storing a request failed");
            ApiError::new(
                ErrorCode::Internal,
                "the data could not be stored; retry later",
            )
        }
    }
}

/// [`read_json`] for an ingest payload, counting the fields it ignored.
async fn read_payload(
    state: &AppState,
    request: Request,
) -> Result<(IngestPayload, IgnoredFields), ApiError> {
    let body = read_body(state, request).await?;
    let (parsed, ignored) = record_ignored(|| serde_json::from_slice(&body));
    Ok((parsed.map_err(json_error)?, ignored))
}

/// Checks the rate limit, content type, encoding and size, then parses the body.
async fn read_json<T: DeserializeOwned>(state: &AppState, request: Request) -> Result<T, ApiError> {
    let body = read_body(state, request).await?;
    serde_json::from_slice(&body).map_err(json_error)
}

fn json_error(e: serde_json::Error) -> ApiError {
    // Serde's own messages can quote field names from the input, so only
    // the position and the kind of problem are reported.
    let what = match e.classify() {
        serde_json::error::Category::Data => "does not match protocol v1",
        _ => "is not valid JSON",
    };
    ApiError::new(
        ErrorCode::MalformedPayload,
        format!("the body {what} (line {}, column {})", e.line(), e.column()),
    )
}

/// Checks the rate limit, content type, encoding and size, and reads the body.
async fn read_body(state: &AppState, request: Request) -> Result<Bytes, ApiError> {
    // Without a peer address (in-process tests), every request shares one bucket.
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
    let source = if state.limiter().behind_proxy() {
        crate::ratelimit::forwarded_source(request.headers()).unwrap_or(peer)
    } else {
        peer
    };
    if let Err(wait) = state.limiter().check(source, Instant::now()) {
        return Err(
            ApiError::new(ErrorCode::RateLimited, "too many requests from this source")
                .retry_after(wait),
        );
    }
    let gzip = check_headers(request.headers(), state.body_limit())?;
    let limit = state.body_limit();
    let raw = Bytes::from_request(request, state)
        .await
        .map_err(|rejection| match rejection {
            BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) => {
                too_large(limit)
            }
            BytesRejection::FailedToBufferBody(e) if crate::connections::is_body_timeout(&e) => {
                let mut e = ApiError::new(
                    ErrorCode::MalformedPayload,
                    "the body did not arrive in time; nothing was stored",
                );
                e.status = axum::http::StatusCode::REQUEST_TIMEOUT;
                e
            }
            _ => ApiError::new(ErrorCode::MalformedPayload, "the body could not be read"),
        })?;
    if gzip {
        gunzip(&raw, limit).map(Bytes::from)
    } else {
        // Parsed where it lies: copying every body once more was pure cost.
        Ok(raw)
    }
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        ErrorCode::PayloadTooLarge,
        format!("the body is over the limit of {limit} bytes"),
    )
}

/// Checks `Content-Type`, `Content-Encoding` and `Content-Length`; returns
/// whether the body is gzipped.
fn check_headers(headers: &HeaderMap, limit: usize) -> Result<bool, ApiError> {
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim());
    if !media.is_some_and(|m| m.eq_ignore_ascii_case("application/json")) {
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "the content type must be application/json",
        ));
    }
    let gzip = match headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().map(str::trim))
    {
        None => false,
        Some(Ok(e)) if e.eq_ignore_ascii_case("identity") => false,
        Some(Ok(e)) if e.eq_ignore_ascii_case("gzip") => true,
        Some(_) => {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "the content encoding must be gzip or absent",
            ));
        }
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large(limit));
    }
    Ok(gzip)
}

/// Decompresses at most `limit` bytes; a body that inflates past it is
/// refused, which stops decompression bombs.
fn gunzip(raw: &[u8], limit: usize) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(raw)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|_| ApiError::new(ErrorCode::MalformedPayload, "the body is not valid gzip"))?;
    if out.len() > limit {
        return Err(too_large(limit));
    }
    Ok(out)
}

/// The whole-request checks: the tier policy, and that this collector takes
/// the project at all. What the manifest declares is checked per item, by
/// [`crate::skew::accept`].
fn check_request(state: &AppState, payload: &IngestPayload) -> Result<(), ApiError> {
    let mut violations = match validate(payload) {
        Ok(()) => Vec::new(),
        Err(Violations(list)) => list,
    };
    if !state.open_mode() {
        match state.project(&payload.project) {
            None => violations.push(Violation::new(
                "project",
                ViolationCode::WrongProject,
                "this collector does not accept this project",
            )),
            Some(project) if project.max_tier == Tier::Off => violations.push(Violation::new(
                "tier",
                ViolationCode::TierAboveMax,
                "this project accepts no data (`max_tier = \"off\"`)",
            )),
            Some(_) => {}
        }
    }
    if violations.is_empty() {
        Ok(())
    } else {
        Err(ApiError::policy(violations))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use std::io::Write;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn store_errors_map_to_status_and_retry_after() {
        // (error, status, code, Retry-After): only a broken database is a 500;
        // anything a retry fixes is a 503 the client keeps its data for.
        let table = [
            (StoreError::QueueFull, 503, "overloaded", Some(1)),
            (StoreError::Closed, 503, "overloaded", Some(5)),
            (
                StoreError::Unavailable("database or disk is full".into()),
                503,
                "overloaded",
                Some(STORAGE_RETRY_AFTER.as_secs()),
            ),
            (StoreError::Database("boom".into()), 500, "internal", None),
        ];
        for (error, status, code, retry_after) in table {
            let label = error.to_string();
            let api = store_error(error);
            assert_eq!(api.status.as_u16(), status, "{label}");
            assert_eq!(api.code(), code, "{label}");
            assert_eq!(api.retry_after, retry_after, "{label}");
        }
    }

    #[test]
    fn content_type_and_encoding_table() {
        let ct = header::CONTENT_TYPE;
        let ce = header::CONTENT_ENCODING;
        let table: [(HeaderMap, Result<bool, u16>); 7] = [
            (headers(&[(ct.clone(), "application/json")]), Ok(false)),
            (
                headers(&[(ct.clone(), "Application/JSON; charset=utf-8")]),
                Ok(false),
            ),
            (
                headers(&[(ct.clone(), "application/json"), (ce.clone(), "gzip")]),
                Ok(true),
            ),
            (
                headers(&[(ct.clone(), "application/json"), (ce.clone(), "br")]),
                Err(415),
            ),
            (headers(&[(ct.clone(), "text/plain")]), Err(415)),
            (headers(&[]), Err(415)),
            (
                headers(&[
                    (ct.clone(), "application/json"),
                    (header::CONTENT_LENGTH, "2048"),
                ]),
                Err(413),
            ),
        ];
        for (h, expected) in table {
            let got = check_headers(&h, 1024).map_err(|e| e.status.as_u16());
            assert_eq!(got, expected, "{h:?}");
        }
    }

    #[test]
    fn gunzip_enforces_the_limit_on_the_inflated_size() {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&vec![b' '; 100_000]).unwrap();
        let bomb = enc.finish().unwrap();
        assert!(bomb.len() < 1024, "compresses well: {}", bomb.len());
        assert_eq!(gunzip(&bomb, 1024).unwrap_err().status.as_u16(), 413);
        assert_eq!(gunzip(&bomb, 200_000).unwrap().len(), 100_000);
        assert_eq!(gunzip(b"not gzip", 1024).unwrap_err().status.as_u16(), 400);
    }
}
