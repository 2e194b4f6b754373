//! Tollbooth control plane: the admin, member and payment APIs run as AWS Lambda
//! functions (`lambda_http`) over one DynamoDB table.
//!
//! Handlers are generic over the store port in [`store`] and the edge sync port in
//! [`sync`], so unit tests use [`store::MemoryStore`] and [`sync::RecordingSync`], and
//! production (and the contract tests) use [`dynamo::DynamoStore`] and
//! [`sync::HttpEdgeSync`]. Locally, every route is served by one process through the
//! small hyper adapter in [`local`]; in Lambda, by `lambda_http::run`. The admin side
//! never writes edge state itself: it calls the worker's signed internal API.

pub mod admin;
pub mod app;
pub mod app_login;
pub mod captures;
pub mod config;
pub mod crypto;
pub mod dynamo;
pub mod error;
pub mod export;
pub mod jobs;
pub mod local;
pub mod login;
pub mod members;
pub mod model;
pub mod outbox;
pub mod payments;
pub mod runtime;
pub mod ssrf;
pub mod store;
pub mod summary;
pub mod sync;
