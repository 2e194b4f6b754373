//! OpenAI Responses API wire types (`POST /v1/responses`): the request, the input and
//! output items both directions share, the response object, the typed stream events
//! (each with its `sequence_number`) and the error shapes.
//!
//! Robustness rules, as for the other protocols:
//! - Unknown fields of the objects that round-trip (request, items, parts, tools, the
//!   response) are kept in flattened `extra` maps.
//! - Unknown item, part, tool and event types, and known ones that do not parse, are kept
//!   as `Unknown(Value)`; translators decide whether that is an error.
//! - An input message may come without `"type": "message"` (the SDK's "easy" message);
//!   [`Item`] accepts both and serialises it back the way it came.
//!
//! HTTP errors use the OpenAI error body (`{"error":{"message","type","param","code"}}`),
//! so [`ErrorResponse`] is the OpenAI one; a failed response carries a
//! [`ResponseError`], and a stream reports errors with [`StreamEvent::Error`].

mod items;
mod request;
mod response;
mod stream;

pub use crate::protocol::openai::{ErrorBody, ErrorResponse};
pub use items::{
    ContentPart, CustomToolCallItem, FilePart, FunctionCallItem, FunctionCallOutputItem, ImagePart,
    Item, MessageContent, MessageItem, MessageRole, OutputTextPart, ReasoningItem, SummaryText,
    TextPart, ToolOutput,
};
pub use request::{
    CustomTool, FunctionTool, Input, NamedToolChoice, ReasoningConfig, ResponsesRequest,
    TextConfig, TextFormat, Tool, ToolChoice, ToolChoiceMode,
};
pub use response::{
    IncompleteDetails, InputTokensDetails, OutputTokensDetails, Response, ResponseError,
    ResponseStatus, ResponseUsage, RESPONSE_OBJECT,
};
pub use stream::StreamEvent;

/// Fields of an object that the owned types do not model, kept verbatim.
pub type Extra = serde_json::Map<String, serde_json::Value>;
