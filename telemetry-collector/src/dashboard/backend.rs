//! The dashboard's [`Backend`] over the collector's own [`AppState`]: the
//! admin-token check and the stats computed by [`crate::stats`], so the pages
//! show exactly what the JSON API returns.

use telemetry_protocol::Day;

use super::{Backend, BackendError, BackendFuture};
use crate::report::ProjectStats;
use crate::state::AppState;
use crate::store::StoreError;

fn storage(e: StoreError) -> BackendError {
    BackendError(e.to_string())
}

impl Backend for AppState {
    fn check_admin_token(&self, token: &str) -> bool {
        self.verify_admin(token)
    }

    /// Configured projects and every project with stored data, like `GET /api/v1/projects`.
    fn projects(&self) -> BackendFuture<'_, Vec<String>> {
        Box::pin(async move {
            let mut names: Vec<String> = AppState::projects(self).keys().cloned().collect();
            names.extend(self.store().projects().await.map_err(storage)?);
            names.sort();
            names.dedup();
            Ok(names)
        })
    }

    fn stats<'a>(
        &'a self,
        project: &'a str,
        from: Day,
        to: Day,
    ) -> BackendFuture<'a, Option<ProjectStats>> {
        Box::pin(async move {
            let known = self.project(project).is_some()
                || self
                    .store()
                    .projects()
                    .await
                    .map_err(storage)?
                    .iter()
                    .any(|p| p == project);
            if !known {
                return Ok(None);
            }
            crate::stats::project_stats(self.store(), project, from, to)
                .await
                .map(Some)
                .map_err(storage)
        })
    }

    fn skew<'a>(
        &'a self,
        project: &'a str,
        from: Day,
        to: Day,
    ) -> BackendFuture<'a, Vec<crate::store::RefusalRow>> {
        Box::pin(async move {
            self.store()
                .refusals(project, from, to)
                .await
                .map_err(storage)
        })
    }
}
