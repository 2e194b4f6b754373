//! The `payments` function: checkout, webhooks, redemption codes, the fulfilment outbox
//! (see template.yaml for the routes it serves).

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    tollbooth_admin::runtime::run().await
}
