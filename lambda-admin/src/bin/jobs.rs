//! The `jobs` function: the scheduled job of `jobs.rs`, run by an EventBridge schedule
//! (template.yaml). With `JOBS_INTERVAL_SECS` set it runs locally on that timer instead
//! (`make dev`).

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    tollbooth_admin::runtime::run_jobs().await
}
