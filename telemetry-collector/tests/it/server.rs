//! A real server on 127.0.0.1:0: HTTP end to end, graceful shutdown that
//! drains the write queue, and 503 when the queue is full.

use axum::http::StatusCode;
use tokio::sync::oneshot;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_server_ingests_and_shuts_down_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let state = state(&cfg);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(telemetry_collector::serve(listener, state, async {
        let _ = stopped.await;
    }));

    let client = client();
    let mut accepted = 0;
    for i in 0..20 {
        let payload = anonymous(new_id(), vec![event(new_id(), "install")]);
        let (status, body) = http_post(&client, &format!("{url}/v1/ingest"), &payload)
            .await
            .unwrap();
        assert_eq!(status, 200, "request {i}: {body}");
        accepted += body["accepted"].as_u64().unwrap();
    }
    let health = client.get(format!("{url}/healthz")).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let unauthorized = client.get(format!("{url}/metrics")).send().await.unwrap();
    assert_eq!(unauthorized.status().as_u16(), 401);

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    // serve() returned, so the writer has committed and checkpointed everything.
    assert_eq!(
        query_i64(&cfg.db_path(), "SELECT COUNT(*) FROM events") as u64,
        accepted
    );
    assert!(
        client.get(format!("{url}/healthz")).send().await.is_err(),
        "the listener is closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_write_queue_answers_503_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.queue.capacity = 1;
    cfg.queue.max_batch = 1;
    let state = state(&cfg);

    // Hold SQLite's write lock from outside, as a long backup or a stuck
    // disk would: the writer blocks on its first job and the queue fills.
    let blocker = rusqlite::Connection::open(cfg.db_path()).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();

    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let state = state.clone();
        tasks.spawn(async move {
            let payload = anonymous(new_id(), vec![event(new_id(), "install")]);
            let (status, response) = send(&state, post("/v1/ingest", payload.to_string())).await;
            let retry = response.headers().get("retry-after").cloned();
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            (
                status,
                retry,
                serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
            )
        });
    }
    // Nothing can commit while the lock is held, so the first answer must be a refusal.
    let (status, retry, body) = tasks.join_next().await.unwrap().unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], "overloaded");
    assert!(retry.is_some(), "503 carries Retry-After");

    blocker.execute_batch("ROLLBACK").unwrap();
    let mut ok = 0;
    let mut refused = 1;
    while let Some(result) = tasks.join_next().await {
        let (status, _, body) = result.unwrap();
        match status {
            StatusCode::OK => ok += body["accepted"].as_u64().unwrap(),
            StatusCode::SERVICE_UNAVAILABLE => refused += 1,
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(
        ok >= 1 && refused >= 1 && ok + refused == 6,
        "ok {ok}, refused {refused}"
    );
    state.store().close().await.unwrap();
    // Exactly the acknowledged requests were stored.
    assert_eq!(
        query_i64(&cfg.db_path(), "SELECT COUNT(*) FROM events") as u64,
        ok
    );
}
