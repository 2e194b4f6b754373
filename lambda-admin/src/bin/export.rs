//! The `export` function: training-data export jobs (routes and schedule in
//! template.yaml; see `tollbooth_admin::export`).

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    tollbooth_admin::runtime::run_export().await
}
