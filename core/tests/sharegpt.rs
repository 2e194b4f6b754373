//! Golden tests for the ShareGPT conversion: every `fixtures/sharegpt/<case>.record.json`
//! (a stored capture record) → `<case>.expected.json`: the ShareGPT record, the reason
//! codes (empty = valid) and the OpenAI fine-tuning line, compared as parsed JSON.
//! `UPDATE_GOLDEN=1` rewrites the expected files (review the diff before committing).

use std::fs;
use std::path::PathBuf;

use serde_json::{json, Value};
use tollbooth_core::capture::sharegpt::{to_openai_messages, to_sharegpt, Conversation};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sharegpt")
}

fn convert(record: &Value) -> Value {
    let conv = Conversation::from_record(record);
    let (sharegpt, reasons) = to_sharegpt(&conv);
    json!({
        "sharegpt": sharegpt,
        "valid": reasons.is_empty(),
        "reasons": reasons.iter().map(|r| r.code.clone()).collect::<Vec<_>>(),
        "openai": to_openai_messages(&conv),
    })
}

#[test]
fn test_sharegpt_golden_fixtures() {
    let update = std::env::var("UPDATE_GOLDEN").is_ok();
    let mut cases = 0;
    for entry in fs::read_dir(dir()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let Some(case) = name.strip_suffix(".record.json") else {
            continue;
        };
        cases += 1;
        let record: Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        let got = convert(&record);
        let expected_path = dir().join(format!("{case}.expected.json"));
        if update {
            fs::write(
                &expected_path,
                serde_json::to_string_pretty(&got).unwrap() + "\n",
            )
            .unwrap();
            continue;
        }
        let expected: Value =
            serde_json::from_str(&fs::read_to_string(&expected_path).unwrap()).unwrap();
        assert_eq!(got, expected, "case {case}");
        // Every value of a valid record is a non-empty string; function_call values
        // are `{"name","arguments"}` JSON; tools is a JSON string.
        if got["valid"] == true {
            for m in got["sharegpt"]["conversations"].as_array().unwrap() {
                assert!(!m["value"].as_str().unwrap().trim().is_empty(), "{case}");
                if m["from"] == "function_call" {
                    let v: Value = serde_json::from_str(m["value"].as_str().unwrap()).unwrap();
                    let calls = v.as_array().cloned().unwrap_or_else(|| vec![v.clone()]);
                    for c in calls {
                        assert!(
                            c["name"].is_string() && c["arguments"].is_object(),
                            "{case}"
                        );
                    }
                }
            }
            let _: Value =
                serde_json::from_str(got["sharegpt"]["tools"].as_str().unwrap()).unwrap();
        }
    }
    assert!(cases >= 7, "fixtures missing: {cases}");
}
