//! Topic and pattern validation never panics, and matching agrees with intersection: a
//! topic matches `a ∩ b` exactly when it matches both.
#![no_main]

use libfuzzer_sys::fuzz_target;
use statecast_core::{Pattern, Topic};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Three fields separated by newlines: two patterns and a topic.
    let mut parts = text.splitn(3, '\n');
    let (Some(a), Some(b), Some(t)) = (parts.next(), parts.next(), parts.next()) else {
        let _ = Topic::new(text);
        let _ = Pattern::new(text);
        return;
    };
    let (Ok(a), Ok(b), Ok(topic)) = (Pattern::new(a), Pattern::new(b), Topic::new(t)) else {
        return;
    };
    let both = a.matches(&topic) && b.matches(&topic);
    match a.intersect(&b) {
        Some(i) => {
            assert!(Pattern::new(i.as_str()).is_ok(), "{i} is not a pattern");
            assert_eq!(i.matches(&topic), both, "{a} ∩ {b} = {i} on {topic}");
        }
        None => assert!(!both, "{a} and {b} both match {topic}"),
    }
});
