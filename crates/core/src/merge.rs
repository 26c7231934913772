//! RFC 7396 JSON merge patches: computing one from two states and applying one.
//!
//! A merge patch cannot say "set this member to `null`" (a `null` in a patch removes the
//! member), so [`diff`] reports such changes as [`Diff::Replace`] and the hub sends the new
//! state whole.
//!
//! Numbers compare as written: the workspace builds `serde_json` with `arbitrary_precision`,
//! so a number is kept as the digits the device sent (only an exponent is spelled `e+N` or
//! `e-N`: `1E2` is kept as `1e+2`) and two numbers are equal when that text is. `1.10` after
//! `1.1`, `1.0` after `1`, `1e2` after `100` are changes, and the patch carries the new
//! text; the same text again is no change. Comparing by value instead would
//! leave the old spelling in the state while the device last wrote another, so readers would
//! not hold what it wrote; and `1.0` vs `1` or `1e2` vs `100` already differed before (an
//! integer was never equal to a float).

use serde_json::{Map, Value};

/// What it takes to go from one state to another.
#[derive(Debug, Clone, PartialEq)]
pub enum Diff {
    /// The states are equal: nothing changed.
    Same,
    /// Applying this merge patch to the old state gives the new one.
    Patch(Value),
    /// No merge patch expresses the change (it sets a member to `null`); send the whole state.
    Replace,
}

/// Computes the merge patch that turns `old` into `new`.
///
/// ```
/// use serde_json::json;
/// use statecast_core::merge::{apply, diff, Diff};
/// let old = json!({"uptime": 123, "outputs": [0, 1], "name": "esp"});
/// let new = json!({"uptime": 124, "outputs": [0, 1]});
/// let Diff::Patch(patch) = diff(&old, &new) else { panic!() };
/// assert_eq!(patch, json!({"uptime": 124, "name": null}));
/// let mut state = old.clone();
/// apply(&mut state, &patch);
/// assert_eq!(state, new);
/// ```
pub fn diff(old: &Value, new: &Value) -> Diff {
    if old == new {
        return Diff::Same;
    }
    match (old, new) {
        (Value::Object(old), Value::Object(new)) => match diff_objects(old, new) {
            Some(patch) => Diff::Patch(Value::Object(patch)),
            None => Diff::Replace,
        },
        // A non-object patch replaces the target whole; an object patch onto a non-object
        // target is applied to `{}`, which drops its nulls.
        (_, new) if has_null_member(new) => Diff::Replace,
        (_, new) => Diff::Patch(new.clone()),
    }
}

/// The patch between two unequal objects, or `None` when it would need a literal `null`.
fn diff_objects(old: &Map<String, Value>, new: &Map<String, Value>) -> Option<Map<String, Value>> {
    let mut patch = Map::new();
    for key in old.keys() {
        if !new.contains_key(key) {
            patch.insert(key.clone(), Value::Null);
        }
    }
    for (key, new_value) in new {
        match old.get(key) {
            Some(old_value) if old_value == new_value => {}
            Some(Value::Object(old_child)) if new_value.is_object() => {
                let Value::Object(new_child) = new_value else {
                    continue;
                };
                patch.insert(
                    key.clone(),
                    Value::Object(diff_objects(old_child, new_child)?),
                );
            }
            _ => {
                if new_value.is_null() || has_null_member(new_value) {
                    return None;
                }
                patch.insert(key.clone(), new_value.clone());
            }
        }
    }
    Some(patch)
}

/// Whether an object (at any depth of objects) holds a `null` member; arrays are opaque to
/// merge patches, so nulls inside them are fine.
fn has_null_member(value: &Value) -> bool {
    match value {
        Value::Object(map) => map.values().any(|v| v.is_null() || has_null_member(v)),
        _ => false,
    }
}

/// Applies `patch` to `target` as RFC 7396 says.
pub fn apply(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(map) = target else {
        return;
    };
    for (key, value) in patch {
        if value.is_null() {
            map.remove(key);
        } else {
            apply(map.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn rfc7396_examples() {
        // The examples of RFC 7396, appendix A.
        let cases = [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b"}), json!({"a":null}), json!({})),
            (
                json!({"a":"b","b":"c"}),
                json!({"a":null}),
                json!({"b":"c"}),
            ),
            (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"c"}), json!({"a":["b"]}), json!({"a":["b"]})),
            (
                json!({"a":{"b":"c"}}),
                json!({"a":{"b":"d","c":null}}),
                json!({"a":{"b":"d"}}),
            ),
            (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a":"b"}), json!(["c"]), json!(["c"])),
            (json!({"a":"foo"}), json!(null), json!(null)),
            (json!({"a":"foo"}), json!("bar"), json!("bar")),
            (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
            (json!([1, 2]), json!({"a":"b","c":null}), json!({"a":"b"})),
            (
                json!({}),
                json!({"a":{"bb":{"ccc":null}}}),
                json!({"a":{"bb":{}}}),
            ),
        ];
        for (mut target, patch, expected) in cases {
            apply(&mut target, &patch);
            assert_eq!(target, expected);
        }
    }

    #[test]
    fn diff_holds_only_what_changed() {
        let old = json!({"a": 1, "b": {"c": 2, "d": 3}, "e": [1, 2]});
        let new = json!({"a": 1, "b": {"c": 2, "d": 4}, "e": [1, 2, 3]});
        assert_eq!(
            diff(&old, &new),
            Diff::Patch(json!({"b": {"d": 4}, "e": [1, 2, 3]}))
        );
        assert_eq!(diff(&old, &old.clone()), Diff::Same);
    }

    #[test]
    fn nulls_force_a_replace() {
        assert_eq!(diff(&json!({"a": 1}), &json!({"a": null})), Diff::Replace);
        assert_eq!(
            diff(&json!({"a": 1}), &json!({"a": {"b": null}})),
            Diff::Replace
        );
        assert_eq!(diff(&json!(1), &json!({"b": null})), Diff::Replace);
        // Unchanged nulls and nulls inside arrays are expressible.
        assert_eq!(
            diff(
                &json!({"a": null, "b": 1}),
                &json!({"a": null, "b": [null]})
            ),
            Diff::Patch(json!({"b": [null]}))
        );
    }

    #[test]
    fn numbers_compare_as_written() {
        let number = |text: &str| -> Value { serde_json::from_str(text).unwrap() };
        let big = "123456789012345678901234567890123456789";
        assert_eq!(diff(&number(big), &number(big)), Diff::Same);
        assert_eq!(diff(&number("1e-400"), &number("1e-400")), Diff::Same);
        // The parser spells every exponent `e+N` or `e-N`; the digits stay.
        assert_eq!(number("1E2").to_string(), "1e+2");
        assert_eq!(diff(&number("1e2"), &number("1E+2")), Diff::Same);
        for (old, new) in [
            ("1.10", "1.1"),
            ("1", "1.0"),
            ("100", "1e2"),
            ("100.0", "1e2"),
            ("1e2", "1e02"),
            ("1e-400", "0.0"),
            (big, "123456789012345678901234567890123456790"),
        ] {
            let old = json!({ "x": number(old), "y": 1 });
            let new = json!({ "x": number(new), "y": 1 });
            let Diff::Patch(patch) = diff(&old, &new) else {
                panic!("{old} -> {new} is a change")
            };
            assert_eq!(patch.to_string(), format!(r#"{{"x":{}}}"#, new["x"]));
        }
    }

    /// Numbers spelled in ways an `f64` would make equal, or could not hold.
    const NUMBERS: [&str; 7] = ["1", "1.0", "1e0", "10E-1", "0.1", "0.10", "1e400"];

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            (-5i64..5).prop_map(Value::from),
            prop::sample::select(&NUMBERS[..]).prop_map(|n| serde_json::from_str(n).unwrap()),
            "[a-c]{0,2}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
                prop::collection::btree_map("[a-d]", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn applying_the_diff_gives_the_new_state(old in json_value(), new in json_value()) {
            match diff(&old, &new) {
                Diff::Same => prop_assert_eq!(&old, &new),
                Diff::Patch(patch) => {
                    let mut state = old.clone();
                    apply(&mut state, &patch);
                    prop_assert_eq!(&state, &new);
                    // And by RFC 7396 as written down independently of this module.
                    prop_assert_eq!(statecast_testkit::merge_patch(&old, &patch), new);
                }
                Diff::Replace => prop_assert!(has_null_member(&new)),
            }
        }

        #[test]
        fn a_patch_never_holds_unchanged_members(old in json_value(), new in json_value()) {
            if let (Value::Object(o), Value::Object(n), Diff::Patch(Value::Object(p))) =
                (&old, &new, diff(&old, &new))
            {
                check_minimal(o, n, &p)?;
            }
        }
    }

    /// Every member of `patch` is a removal, a changed value, or a nested patch of an object
    /// that changed, and never repeats what `old` already holds.
    fn check_minimal(
        old: &Map<String, Value>,
        new: &Map<String, Value>,
        patch: &Map<String, Value>,
    ) -> Result<(), TestCaseError> {
        for (key, value) in patch {
            match (old.get(key), new.get(key), value) {
                (Some(_), None, Value::Null) => {}
                (Some(Value::Object(o)), Some(Value::Object(n)), Value::Object(p)) => {
                    prop_assert_ne!(o, n);
                    check_minimal(o, n, p)?;
                }
                (before, Some(after), value) => {
                    prop_assert_eq!(after, value);
                    prop_assert_ne!(before, Some(value));
                }
                (before, after, value) => {
                    prop_assert!(false, "{key}: {before:?} -> {after:?} patched with {value}");
                }
            }
        }
        Ok(())
    }
}
