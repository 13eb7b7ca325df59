//! Policy loading: any text either loads or yields diagnostics; a policy
//! that loads evaluates requests naming its own ids, and its test cases
//! (when the text also parses as a case file) run, all without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use purposegate_engine::{CaseFile, DecisionRequest, Policy, Resource, Subject};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(policy) = Policy::parse("fuzz.yaml", text) else {
        let _ = CaseFile::parse("fuzz_test.yaml", text);
        return;
    };
    let purposes = policy.purposes();
    let categories = policy.categories();
    for p in 0..8 {
        for c in 0..8 {
            let (Some(purpose), Some(category)) = (purposes.node(p), categories.node(c)) else {
                continue;
            };
            let request = DecisionRequest {
                purpose: purpose.id.to_string(),
                subject: Subject {
                    id: "fuzz".into(),
                    ..Subject::default()
                },
                resource: Resource {
                    category: category.id.to_string(),
                    ..Resource::default()
                },
                ..DecisionRequest::default()
            };
            let _ = policy.evaluate(&request);
        }
    }
    if let Ok(cases) = CaseFile::parse("fuzz_test.yaml", text) {
        let _ = cases.run(&policy);
    }
});
