//! Tollbooth control plane: the admin, member and payment APIs run as AWS Lambda
//! functions (`lambda_http`) over one DynamoDB table.
//!
//! Handlers are generic over the store ports in [`store`], so unit tests use
//! [`store::MemoryStore`] and production (and the contract tests) use
//! [`dynamo::DynamoStore`]. Locally, every route is served by one process through
//! the small hyper adapter in [`local`]; in Lambda, by `lambda_http::run`.

pub mod app;
pub mod config;
pub mod dynamo;
pub mod local;
pub mod store;
