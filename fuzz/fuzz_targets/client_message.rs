//! Any text a WebSocket client sends is parsed into a request or a clear error; never a
//! panic. A parsed request names only valid topics and patterns. Text that is not JSON the
//! hub takes (nesting deeper than 128, say) is refused as such, never as a field it seems
//! to lack (issue 17).
#![no_main]

use libfuzzer_sys::fuzz_target;
use statecast_core::{Pattern, Topic};
use statecast_core::request::{Request, parse};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = parse(text);
    if serde_json::from_str::<serde_json::Value>(text).is_err()
        && let Err(e) = &parsed.request
    {
        assert!(!e.message.contains("missing field"), "{text:?}: {}", e.message);
    }
    match parsed.request {
        Ok(Request::Subscribe { patterns, .. })
        | Ok(Request::Unsubscribe { patterns })
        | Ok(Request::Get { patterns }) => {
            for p in patterns {
                assert!(Pattern::new(p.as_str()).is_ok());
            }
        }
        Ok(Request::Set { topic, .. })
        | Ok(Request::Patch { topic, .. })
        | Ok(Request::Delete { topic })
        | Ok(Request::Event { topic, .. })
        | Ok(Request::Command { target: topic, .. }) => {
            assert!(Topic::new(topic.as_str()).is_ok());
        }
        Ok(_) => {}
        Err(e) => assert!(!e.message.is_empty()),
    }
});
