//! The dashboard's [`Backend`] over the collector's own [`AppState`]: the
//! admin-token check and the stats computed by [`crate::stats`], so the pages
//! show exactly what the JSON API returns.

use telemetry_protocol::Day;

use super::public::{PublicProject, public_window};
use super::{Backend, BackendError, BackendFuture};
use crate::report::ProjectStats;
use crate::state::AppState;
use crate::store::{ReleasedCell, StoreError};

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

    fn public_cells<'a>(
        &'a self,
        project: &'a str,
        settings: PublicProject,
        today: Day,
    ) -> BackendFuture<'a, Option<Vec<ReleasedCell>>> {
        Box::pin(async move {
            if !self.knows(project).await.map_err(storage)? {
                return Ok(None);
            }
            let (from, _) = public_window(today);
            crate::release::release(
                self.store(),
                project,
                from,
                today,
                settings.budget,
                settings.min_count,
            )
            .await
            .map(Some)
            .map_err(|e| BackendError(e.to_string()))
        })
    }

    fn stats<'a>(
        &'a self,
        project: &'a str,
        from: Day,
        to: Day,
    ) -> BackendFuture<'a, Option<ProjectStats>> {
        Box::pin(async move {
            if !self.knows(project).await.map_err(storage)? {
                return Ok(None);
            }
            let manifest = self.project(project).map(|p| &p.manifest);
            crate::stats::project_stats_declared(self.store(), project, manifest, from, to)
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

impl AppState {
    /// Whether `project` is configured or has stored data.
    async fn knows(&self, project: &str) -> Result<bool, StoreError> {
        Ok(self.project(project).is_some()
            || self.store().projects().await?.iter().any(|p| p == project))
    }
}
