//! The typed stream events of a streamed response. On the wire each is an SSE event whose
//! `event:` name equals the data's `type`; every event carries a `sequence_number` that
//! counts up from 0 within the stream.
//!
//! Order (what the SDKs check): `response.created` first; per output item
//! `output_item.added`, then (for messages) `content_part.added` before any delta of that
//! part, the deltas, the `.done` events, `output_item.done`; finally one of
//! `response.completed` / `response.incomplete` / `response.failed`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ContentPart, Item, Response, SummaryText};

/// One stream event. Unknown event types (and known ones that do not parse) are kept as
/// raw JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum StreamEvent {
    #[serde(rename = "response.created")]
    Created {
        response: Box<Response>,
        sequence_number: u64,
    },
    #[serde(rename = "response.in_progress")]
    InProgress {
        response: Box<Response>,
        sequence_number: u64,
    },
    #[serde(rename = "response.completed")]
    Completed {
        response: Box<Response>,
        sequence_number: u64,
    },
    #[serde(rename = "response.incomplete")]
    Incomplete {
        response: Box<Response>,
        sequence_number: u64,
    },
    #[serde(rename = "response.failed")]
    Failed {
        response: Box<Response>,
        sequence_number: u64,
    },
    #[serde(rename = "response.output_item.added")]
    OutputItemAdded {
        output_index: u32,
        item: Item,
        sequence_number: u64,
    },
    #[serde(rename = "response.output_item.done")]
    OutputItemDone {
        output_index: u32,
        item: Item,
        sequence_number: u64,
    },
    #[serde(rename = "response.content_part.added")]
    ContentPartAdded {
        item_id: String,
        output_index: u32,
        content_index: u32,
        part: ContentPart,
        sequence_number: u64,
    },
    #[serde(rename = "response.content_part.done")]
    ContentPartDone {
        item_id: String,
        output_index: u32,
        content_index: u32,
        part: ContentPart,
        sequence_number: u64,
    },
    #[serde(rename = "response.output_text.delta")]
    OutputTextDelta {
        item_id: String,
        output_index: u32,
        content_index: u32,
        delta: String,
        #[serde(default)]
        logprobs: Vec<Value>,
        sequence_number: u64,
    },
    #[serde(rename = "response.output_text.done")]
    OutputTextDone {
        item_id: String,
        output_index: u32,
        content_index: u32,
        text: String,
        #[serde(default)]
        logprobs: Vec<Value>,
        sequence_number: u64,
    },
    #[serde(rename = "response.refusal.delta")]
    RefusalDelta {
        item_id: String,
        output_index: u32,
        content_index: u32,
        delta: String,
        sequence_number: u64,
    },
    #[serde(rename = "response.refusal.done")]
    RefusalDone {
        item_id: String,
        output_index: u32,
        content_index: u32,
        refusal: String,
        sequence_number: u64,
    },
    #[serde(rename = "response.function_call_arguments.delta")]
    FunctionCallArgumentsDelta {
        item_id: String,
        output_index: u32,
        delta: String,
        sequence_number: u64,
    },
    #[serde(rename = "response.function_call_arguments.done")]
    FunctionCallArgumentsDone {
        item_id: String,
        output_index: u32,
        arguments: String,
        sequence_number: u64,
    },
    #[serde(rename = "response.custom_tool_call_input.delta")]
    CustomToolCallInputDelta {
        item_id: String,
        output_index: u32,
        delta: String,
        sequence_number: u64,
    },
    #[serde(rename = "response.custom_tool_call_input.done")]
    CustomToolCallInputDone {
        item_id: String,
        output_index: u32,
        input: String,
        sequence_number: u64,
    },
    #[serde(rename = "response.reasoning_summary_part.added")]
    ReasoningSummaryPartAdded {
        item_id: String,
        output_index: u32,
        summary_index: u32,
        part: SummaryText,
        sequence_number: u64,
    },
    #[serde(rename = "response.reasoning_summary_part.done")]
    ReasoningSummaryPartDone {
        item_id: String,
        output_index: u32,
        summary_index: u32,
        part: SummaryText,
        sequence_number: u64,
    },
    #[serde(rename = "response.reasoning_summary_text.delta")]
    ReasoningSummaryTextDelta {
        item_id: String,
        output_index: u32,
        summary_index: u32,
        delta: String,
        sequence_number: u64,
    },
    #[serde(rename = "response.reasoning_summary_text.done")]
    ReasoningSummaryTextDone {
        item_id: String,
        output_index: u32,
        summary_index: u32,
        text: String,
        sequence_number: u64,
    },
    #[serde(rename = "response.reasoning_text.delta")]
    ReasoningTextDelta {
        item_id: String,
        output_index: u32,
        content_index: u32,
        delta: String,
        sequence_number: u64,
    },
    #[serde(rename = "response.reasoning_text.done")]
    ReasoningTextDone {
        item_id: String,
        output_index: u32,
        content_index: u32,
        text: String,
        sequence_number: u64,
    },
    /// A stream-level error (`code` may be absent).
    #[serde(rename = "error")]
    Error {
        #[serde(default)]
        code: Option<String>,
        #[serde(default)]
        message: String,
        #[serde(default)]
        param: Option<String>,
        #[serde(default)]
        sequence_number: u64,
    },
    #[serde(untagged)]
    Unknown(Value),
}

impl StreamEvent {
    /// Parses the `data:` of one SSE event.
    pub fn from_data(data: &str) -> Result<StreamEvent, serde_json::Error> {
        serde_json::from_str(data)
    }

    /// The event's `type` (also its SSE `event:` name).
    pub fn event_name(&self) -> &str {
        match self {
            StreamEvent::Created { .. } => "response.created",
            StreamEvent::InProgress { .. } => "response.in_progress",
            StreamEvent::Completed { .. } => "response.completed",
            StreamEvent::Incomplete { .. } => "response.incomplete",
            StreamEvent::Failed { .. } => "response.failed",
            StreamEvent::OutputItemAdded { .. } => "response.output_item.added",
            StreamEvent::OutputItemDone { .. } => "response.output_item.done",
            StreamEvent::ContentPartAdded { .. } => "response.content_part.added",
            StreamEvent::ContentPartDone { .. } => "response.content_part.done",
            StreamEvent::OutputTextDelta { .. } => "response.output_text.delta",
            StreamEvent::OutputTextDone { .. } => "response.output_text.done",
            StreamEvent::RefusalDelta { .. } => "response.refusal.delta",
            StreamEvent::RefusalDone { .. } => "response.refusal.done",
            StreamEvent::FunctionCallArgumentsDelta { .. } => {
                "response.function_call_arguments.delta"
            }
            StreamEvent::FunctionCallArgumentsDone { .. } => {
                "response.function_call_arguments.done"
            }
            StreamEvent::CustomToolCallInputDelta { .. } => "response.custom_tool_call_input.delta",
            StreamEvent::CustomToolCallInputDone { .. } => "response.custom_tool_call_input.done",
            StreamEvent::ReasoningSummaryPartAdded { .. } => {
                "response.reasoning_summary_part.added"
            }
            StreamEvent::ReasoningSummaryPartDone { .. } => "response.reasoning_summary_part.done",
            StreamEvent::ReasoningSummaryTextDelta { .. } => {
                "response.reasoning_summary_text.delta"
            }
            StreamEvent::ReasoningSummaryTextDone { .. } => "response.reasoning_summary_text.done",
            StreamEvent::ReasoningTextDelta { .. } => "response.reasoning_text.delta",
            StreamEvent::ReasoningTextDone { .. } => "response.reasoning_text.done",
            StreamEvent::Error { .. } => "error",
            StreamEvent::Unknown(v) => v.get("type").and_then(Value::as_str).unwrap_or("unknown"),
        }
    }

    /// The event's `sequence_number` (0 for an unknown event without one).
    pub fn sequence_number(&self) -> u64 {
        match self {
            StreamEvent::Created {
                sequence_number, ..
            }
            | StreamEvent::InProgress {
                sequence_number, ..
            }
            | StreamEvent::Completed {
                sequence_number, ..
            }
            | StreamEvent::Incomplete {
                sequence_number, ..
            }
            | StreamEvent::Failed {
                sequence_number, ..
            }
            | StreamEvent::OutputItemAdded {
                sequence_number, ..
            }
            | StreamEvent::OutputItemDone {
                sequence_number, ..
            }
            | StreamEvent::ContentPartAdded {
                sequence_number, ..
            }
            | StreamEvent::ContentPartDone {
                sequence_number, ..
            }
            | StreamEvent::OutputTextDelta {
                sequence_number, ..
            }
            | StreamEvent::OutputTextDone {
                sequence_number, ..
            }
            | StreamEvent::RefusalDelta {
                sequence_number, ..
            }
            | StreamEvent::RefusalDone {
                sequence_number, ..
            }
            | StreamEvent::FunctionCallArgumentsDelta {
                sequence_number, ..
            }
            | StreamEvent::FunctionCallArgumentsDone {
                sequence_number, ..
            }
            | StreamEvent::CustomToolCallInputDelta {
                sequence_number, ..
            }
            | StreamEvent::CustomToolCallInputDone {
                sequence_number, ..
            }
            | StreamEvent::ReasoningSummaryPartAdded {
                sequence_number, ..
            }
            | StreamEvent::ReasoningSummaryPartDone {
                sequence_number, ..
            }
            | StreamEvent::ReasoningSummaryTextDelta {
                sequence_number, ..
            }
            | StreamEvent::ReasoningSummaryTextDone {
                sequence_number, ..
            }
            | StreamEvent::ReasoningTextDelta {
                sequence_number, ..
            }
            | StreamEvent::ReasoningTextDone {
                sequence_number, ..
            }
            | StreamEvent::Error {
                sequence_number, ..
            } => *sequence_number,
            StreamEvent::Unknown(v) => v
                .get("sequence_number")
                .and_then(Value::as_u64)
                .unwrap_or(0),
        }
    }

    /// As an SSE event (`event: <type>`, `data: <json>`), ready for the encoder.
    pub fn to_sse(&self) -> Result<crate::sse::Event, serde_json::Error> {
        Ok(crate::sse::Event {
            event: Some(self.event_name().to_owned()),
            data: serde_json::to_string(self)?,
            id: None,
            retry: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn response() -> Value {
        json!({"id": "resp_1", "object": "response", "created_at": 1, "status": "in_progress",
               "error": null, "incomplete_details": null, "model": "m", "output": [],
               "parallel_tool_calls": true, "tool_choice": "auto", "tools": [], "metadata": {}})
    }

    #[test]
    fn test_every_event_type_parses_and_round_trips() {
        let msg = json!({"type": "message", "id": "msg_1", "status": "in_progress", "role": "assistant", "content": []});
        let part = json!({"type": "output_text", "text": "", "annotations": []});
        let events = [
            json!({"type": "response.created", "response": response(), "sequence_number": 0}),
            json!({"type": "response.in_progress", "response": response(), "sequence_number": 1}),
            json!({"type": "response.output_item.added", "output_index": 0, "item": msg, "sequence_number": 2}),
            json!({"type": "response.content_part.added", "item_id": "msg_1", "output_index": 0, "content_index": 0, "part": part, "sequence_number": 3}),
            json!({"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": "Hi", "logprobs": [], "sequence_number": 4}),
            json!({"type": "response.output_text.done", "item_id": "msg_1", "output_index": 0, "content_index": 0, "text": "Hi", "logprobs": [], "sequence_number": 5}),
            json!({"type": "response.content_part.done", "item_id": "msg_1", "output_index": 0, "content_index": 0, "part": part, "sequence_number": 6}),
            json!({"type": "response.output_item.done", "output_index": 0, "item": msg, "sequence_number": 7}),
            json!({"type": "response.refusal.delta", "item_id": "msg_1", "output_index": 0, "content_index": 1, "delta": "no", "sequence_number": 8}),
            json!({"type": "response.refusal.done", "item_id": "msg_1", "output_index": 0, "content_index": 1, "refusal": "no", "sequence_number": 9}),
            json!({"type": "response.function_call_arguments.delta", "item_id": "fc_1", "output_index": 1, "delta": "{", "sequence_number": 10}),
            json!({"type": "response.function_call_arguments.done", "item_id": "fc_1", "output_index": 1, "arguments": "{}", "sequence_number": 11}),
            json!({"type": "response.custom_tool_call_input.delta", "item_id": "ctc_1", "output_index": 2, "delta": "x", "sequence_number": 12}),
            json!({"type": "response.custom_tool_call_input.done", "item_id": "ctc_1", "output_index": 2, "input": "x", "sequence_number": 13}),
            json!({"type": "response.reasoning_summary_part.added", "item_id": "rs_1", "output_index": 3, "summary_index": 0, "part": {"type": "summary_text", "text": ""}, "sequence_number": 14}),
            json!({"type": "response.reasoning_summary_text.delta", "item_id": "rs_1", "output_index": 3, "summary_index": 0, "delta": "t", "sequence_number": 15}),
            json!({"type": "response.reasoning_summary_text.done", "item_id": "rs_1", "output_index": 3, "summary_index": 0, "text": "t", "sequence_number": 16}),
            json!({"type": "response.reasoning_summary_part.done", "item_id": "rs_1", "output_index": 3, "summary_index": 0, "part": {"type": "summary_text", "text": "t"}, "sequence_number": 17}),
            json!({"type": "response.reasoning_text.delta", "item_id": "rs_1", "output_index": 3, "content_index": 0, "delta": "r", "sequence_number": 18}),
            json!({"type": "response.reasoning_text.done", "item_id": "rs_1", "output_index": 3, "content_index": 0, "text": "r", "sequence_number": 19}),
            json!({"type": "response.completed", "response": response(), "sequence_number": 20}),
            json!({"type": "response.incomplete", "response": response(), "sequence_number": 21}),
            json!({"type": "response.failed", "response": response(), "sequence_number": 22}),
            json!({"type": "error", "code": "server_error", "message": "boom", "param": null, "sequence_number": 23}),
            json!({"type": "response.output_text.annotation.added", "annotation": {}, "sequence_number": 24}),
        ];
        for (i, v) in events.iter().enumerate() {
            let e = StreamEvent::from_data(&v.to_string()).unwrap();
            assert_eq!(e.event_name(), v["type"].as_str().unwrap(), "{v}");
            assert_eq!(e.sequence_number(), i as u64);
            assert_eq!(&serde_json::to_value(&e).unwrap(), v);
        }
        let last = StreamEvent::from_data(&events[24].to_string()).unwrap();
        assert!(matches!(last, StreamEvent::Unknown(_)));
        // A known type that does not parse is kept too.
        let bad = StreamEvent::from_data(r#"{"type":"response.output_text.delta"}"#).unwrap();
        assert!(matches!(bad, StreamEvent::Unknown(_)));
    }
}
