//! The background retention task: purges raw per-install data older than
//! each project's retention, on start and then every `purge_interval_secs`.
//! `telemetry-collector purge` does the same once.

use crate::ingest::today;
use crate::state::AppState;

/// Runs the purge for ever; the server aborts it on shutdown.
pub async fn run(state: AppState) {
    let mut interval = tokio::time::interval(state.purge_interval());
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        match state.store().purge(&state.retention(), today()).await {
            Ok(out) => tracing::info!(
                events = out.events,
                installs = out.installs,
                install_weeks = out.install_weeks,
                report_ids = out.report_ids,
                "retention purge done"
            ),
            Err(e) => tracing::warn!(error = %e, "retention purge failed; will retry"),
        }
    }
}
