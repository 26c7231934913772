//! Topic names and MQTT-style subscription patterns.
//!
//! A topic is `/`-separated segments of `[A-Za-z0-9_.:@~-]`, 1 to 16 segments of 1 to 128
//! bytes, at most 512 bytes in all. A pattern is a topic whose segments may also be `+`
//! (exactly one segment) or a final `#` (zero or more remaining segments).

use std::fmt;
use std::sync::Arc;

pub const MAX_TOPIC_BYTES: usize = 512;
pub const MAX_SEGMENTS: usize = 16;
pub const MAX_SEGMENT_BYTES: usize = 128;

/// Why a topic or pattern was refused; the message names the offending part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameError(pub String);

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NameError {}

/// A validated topic name. Cloning shares the string.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic(Arc<str>);

impl Topic {
    /// Validates `name` as a topic.
    ///
    /// ```
    /// use statecast_core::Topic;
    /// assert!(Topic::new("railhub/esp32-01").is_ok());
    /// assert!(Topic::new("railhub//x").is_err());
    /// assert!(Topic::new("railhub/+").is_err());
    /// ```
    pub fn new(name: &str) -> Result<Topic, NameError> {
        check_name(name, false)?;
        Ok(Topic(Arc::from(name)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::borrow::Borrow<str> for Topic {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for Topic {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

/// A validated subscription pattern.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Pattern(Arc<str>);

impl Pattern {
    /// Validates `text` as a pattern.
    ///
    /// ```
    /// use statecast_core::Pattern;
    /// let p = Pattern::new("micboard/+/battery").unwrap();
    /// assert!(p.matches("micboard/SHURE001/battery"));
    /// assert!(!p.matches("micboard/SHURE001"));
    /// assert!(Pattern::new("a/#/b").is_err());
    /// ```
    pub fn new(text: &str) -> Result<Pattern, NameError> {
        check_name(text, true)?;
        Ok(Pattern(Arc::from(text)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn segments(&self) -> std::str::Split<'_, char> {
        self.0.split('/')
    }

    /// Whether `topic` (assumed valid) matches this pattern.
    pub fn matches(&self, topic: &str) -> bool {
        let mut topic_segments = topic.split('/');
        for pattern_segment in self.0.split('/') {
            match pattern_segment {
                "#" => return true,
                "+" => {
                    if topic_segments.next().is_none() {
                        return false;
                    }
                }
                literal => {
                    if topic_segments.next() != Some(literal) {
                        return false;
                    }
                }
            }
        }
        topic_segments.next().is_none()
    }

    /// The pattern matching exactly the topics both patterns match, if any: how a
    /// subscription is narrowed to what a client may read.
    ///
    /// ```
    /// use statecast_core::Pattern;
    /// let p = |s| Pattern::new(s).unwrap();
    /// assert_eq!(p("#").intersect(&p("railhub/#")), Some(p("railhub/#")));
    /// assert_eq!(p("a/+/c").intersect(&p("a/b/#")), Some(p("a/b/c")));
    /// assert_eq!(p("a/+").intersect(&p("b/#")), None);
    /// ```
    pub fn intersect(&self, other: &Pattern) -> Option<Pattern> {
        let (a, b): (Vec<&str>, Vec<&str>) =
            (self.segments().collect(), other.segments().collect());
        let mut out: Vec<&str> = Vec::with_capacity(a.len().max(b.len()));
        let mut i = 0;
        loop {
            match (a.get(i), b.get(i)) {
                // `#` takes any rest, including none: the other side's rest decides.
                (Some(&"#"), _) => {
                    out.extend(&b[i..]);
                    break;
                }
                (_, Some(&"#")) => {
                    out.extend(&a[i..]);
                    break;
                }
                (None, None) => break,
                (None, Some(_)) | (Some(_), None) => return None,
                (Some(&"+"), Some(&x)) | (Some(&x), Some(&"+")) => out.push(x),
                (Some(&x), Some(&y)) if x == y => out.push(x),
                _ => return None,
            }
            i += 1;
        }
        // Longer than any topic may be (`+/b` with `a/+`, both long): nothing matches both.
        Pattern::new(&out.join("/")).ok()
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn check_name(name: &str, wildcards: bool) -> Result<(), NameError> {
    let what = if wildcards { "pattern" } else { "topic" };
    if name.is_empty() {
        return Err(NameError(format!("{what} is empty")));
    }
    if name.len() > MAX_TOPIC_BYTES {
        return Err(NameError(format!(
            "{what} is {} bytes long, at most {MAX_TOPIC_BYTES} allowed",
            name.len()
        )));
    }
    let count = name.split('/').count();
    if count > MAX_SEGMENTS {
        return Err(NameError(format!(
            "{what} has {count} segments, at most {MAX_SEGMENTS} allowed"
        )));
    }
    for (i, segment) in name.split('/').enumerate() {
        let n = i + 1;
        if segment.is_empty() {
            return Err(NameError(format!("segment {n} is empty")));
        }
        if segment.len() > MAX_SEGMENT_BYTES {
            return Err(NameError(format!(
                "segment {n} is {} bytes long, at most {MAX_SEGMENT_BYTES} allowed",
                segment.len()
            )));
        }
        if segment == "+" || segment == "#" {
            if !wildcards {
                return Err(NameError(format!(
                    "segment {n} is the wildcard '{segment}', which a topic cannot hold"
                )));
            }
            if segment == "#" && n != count {
                return Err(NameError(format!(
                    "segment {n}: '#' may only be the last segment"
                )));
            }
            continue;
        }
        if let Some(bad) = segment
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "_.:@~-".contains(*c)))
        {
            return Err(NameError(format!(
                "segment {n} holds {bad:?}; allowed are A-Z a-z 0-9 _ . : @ ~ -"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn an_intersection_matches_what_both_match(
            a in "(a|b|\\+)(/(a|b|\\+)){0,2}(/#)?|#",
            b in "(a|b|\\+)(/(a|b|\\+)){0,2}(/#)?|#",
            topic in "(a|b|c)(/(a|b|c)){0,3}",
        ) {
            let (a, b) = (Pattern::new(&a).unwrap(), Pattern::new(&b).unwrap());
            let both = a.matches(&topic) && b.matches(&topic);
            match a.intersect(&b) {
                Some(i) => {
                    prop_assert!(Pattern::new(i.as_str()).is_ok(), "{} is a pattern", i);
                    prop_assert_eq!(i.matches(&topic), both, "{} for {}", i, topic);
                }
                None => prop_assert!(!both),
            }
        }
    }

    #[test]
    fn valid_topics() {
        for t in [
            "a",
            "railhub/esp32-01",
            "micboard/SHURE001/battery",
            "x_y.z:w@v~u-t",
            &"s/"
                .repeat(15)
                .chars()
                .chain("s".chars())
                .collect::<String>(),
        ] {
            assert!(Topic::new(t).is_ok(), "{t}");
        }
    }

    #[test]
    fn invalid_topics_say_why() {
        let cases = [
            ("", "empty"),
            ("a//b", "segment 2 is empty"),
            ("/a", "segment 1 is empty"),
            ("a/", "segment 2 is empty"),
            ("a/+", "wildcard"),
            ("a/#", "wildcard"),
            ("a b", "holds ' '"),
            ("a/é", "holds 'é'"),
        ];
        for (t, why) in cases {
            let err = Topic::new(t).unwrap_err();
            assert!(err.0.contains(why), "{t:?}: {err}");
        }
        let deep = vec!["a"; 17].join("/");
        assert!(Topic::new(&deep).unwrap_err().0.contains("17 segments"));
        let long_segment = "a".repeat(129);
        assert!(
            Topic::new(&long_segment)
                .unwrap_err()
                .0
                .contains("129 bytes")
        );
        let long = vec!["a".repeat(100); 6].join("/");
        assert!(Topic::new(&long).unwrap_err().0.contains("at most 512"));
    }

    #[test]
    fn an_intersection_longer_than_any_topic_is_empty() {
        let long = "x".repeat(128);
        let a = Pattern::new(&format!("+/{long}/{long}/+")).unwrap();
        let b = Pattern::new(&format!("{long}/+/+/{long}")).unwrap();
        assert_eq!(a.intersect(&b), None);
    }

    #[test]
    fn pattern_syntax() {
        for p in ["#", "+", "a/+/c", "a/#", "+/+/#"] {
            assert!(Pattern::new(p).is_ok(), "{p}");
        }
        for p in ["#/a", "a/#/b", "a/b+", "a/#x", "", "a//#"] {
            assert!(Pattern::new(p).is_err(), "{p}");
        }
    }

    #[test]
    fn matching() {
        let m = |p: &str, t: &str| Pattern::new(p).unwrap().matches(t);
        assert!(m("#", "a"));
        assert!(m("#", "a/b/c"));
        assert!(m("a/#", "a"));
        assert!(m("a/#", "a/b/c"));
        assert!(!m("a/#", "b/a"));
        assert!(m("a/+", "a/b"));
        assert!(!m("a/+", "a"));
        assert!(!m("a/+", "a/b/c"));
        assert!(m("+/b/+", "a/b/c"));
        assert!(m("a/b", "a/b"));
        assert!(!m("a/b", "a/b/c"));
        assert!(!m("a/b/c", "a/b"));
    }
}
