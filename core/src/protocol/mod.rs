//! Owned wire types for each protocol Tollbooth speaks. Unknown fields are kept in
//! `extra` maps and unknown stream events as raw JSON, never rejected.

pub mod anthropic;
pub mod gemini;
pub mod openai;
pub mod responses;
