//! A request written as YAML or JSON (the CLI's `check`, a test case):
//! parsed, then evaluated against the default policy.
#![no_main]

use libfuzzer_sys::fuzz_target;
use purposegate_engine::parse_request;

fuzz_target!(|data: &[u8]| {
    let Some(policy) = purposegate_fuzz::default_policy() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(request) = parse_request("fuzz.json", text) {
        let _ = policy.evaluate(&request);
    }
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(text) {
        if let Ok(request) = purposegate_engine::request_from_json("fuzz.json", value) {
            let _ = policy.evaluate(&request);
        }
    }
});
