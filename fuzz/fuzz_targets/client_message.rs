//! Any text a WebSocket client sends is parsed into a request or a clear error; never a
//! panic. A parsed request names only valid topics and patterns.
#![no_main]

use libfuzzer_sys::fuzz_target;
use statecast_core::{Pattern, Topic};
use statecast_core::request::{Request, parse};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = parse(text);
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
