//! The tests' RFC 7396 oracle: what a client gets when it applies a merge patch.
//!
//! It is written from the RFC's pseudo-code (section 2), line for line, and shares no code
//! with `statecast_core::merge`, which it checks: a test that follows a stream of patches
//! with the hub's own `apply` would pass if `diff` and `apply` were wrong the same way.
//! Its own tests are the RFC's appendix A.
//!
//! ```text
//! define MergePatch(Target, Patch):
//!   if Patch is an Object:
//!     if Target is not an Object:
//!       Target = {} # Ignore the contents and set it to an empty Object
//!     for each Name/Value pair in Patch:
//!       if Value is null:
//!         if Name exists in Target:
//!           remove the Name/Value pair from Target
//!       else:
//!         Target[Name] = MergePatch(Target[Name], Value)
//!     return Target
//!   else:
//!     return Patch
//! ```

use serde_json::{Map, Value};

/// `MergePatch(target, patch)`: the document that applying `patch` to `target` gives.
/// An absent member is passed as `null`, which is not an object, as the RFC's undefined
/// `Target[Name]` is not.
pub fn merge_patch(target: &Value, patch: &Value) -> Value {
    let Value::Object(patch) = patch else {
        return patch.clone();
    };
    let mut target = match target {
        Value::Object(members) => members.clone(),
        _ => Map::new(),
    };
    for (name, value) in patch {
        if value.is_null() {
            target.remove(name);
        } else {
            let merged = merge_patch(target.get(name).unwrap_or(&Value::Null), value);
            target.insert(name.clone(), merged);
        }
    }
    Value::Object(target)
}

/// Replaces `target` by [`merge_patch`]`(target, patch)`, for a client's copy of a topic.
pub fn merge_apply(target: &mut Value, patch: &Value) {
    *target = merge_patch(target, patch);
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn every_example_of_rfc_7396_appendix_a_holds() {
        // (original, patch, result), in the appendix's order.
        let cases = [
            (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
            (
                json!({"a": "b"}),
                json!({"b": "c"}),
                json!({"a": "b", "b": "c"}),
            ),
            (json!({"a": "b"}), json!({"a": null}), json!({})),
            (
                json!({"a": "b", "b": "c"}),
                json!({"a": null}),
                json!({"b": "c"}),
            ),
            (json!({"a": ["b"]}), json!({"a": "c"}), json!({"a": "c"})),
            (json!({"a": "c"}), json!({"a": ["b"]}), json!({"a": ["b"]})),
            (
                json!({"a": {"b": "c"}}),
                json!({"a": {"b": "d", "c": null}}),
                json!({"a": {"b": "d"}}),
            ),
            (
                json!({"a": [{"b": "c"}]}),
                json!({"a": [1]}),
                json!({"a": [1]}),
            ),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a": "b"}), json!(["c"]), json!(["c"])),
            (json!({"a": "foo"}), json!(null), json!(null)),
            (json!({"a": "foo"}), json!("bar"), json!("bar")),
            (
                json!({"e": null}),
                json!({"a": 1}),
                json!({"e": null, "a": 1}),
            ),
            (
                json!([1, 2]),
                json!({"a": "b", "c": null}),
                json!({"a": "b"}),
            ),
            (
                json!({}),
                json!({"a": {"bb": {"ccc": null}}}),
                json!({"a": {"bb": {}}}),
            ),
        ];
        for (original, patch, result) in cases {
            assert_eq!(
                merge_patch(&original, &patch),
                result,
                "{original} patched with {patch}"
            );
            let mut copy = original.clone();
            merge_apply(&mut copy, &patch);
            assert_eq!(copy, result, "{original} patched in place with {patch}");
        }
    }

    #[test]
    fn the_example_of_rfc_7396_section_3_holds() {
        let original = json!({
            "title": "Goodbye!",
            "author": {"givenName": "John", "familyName": "Doe"},
            "tags": ["example", "sample"],
            "content": "This will be unchanged"
        });
        let patch = json!({
            "title": "Hello!",
            "phoneNumber": "+01-123-456-7890",
            "author": {"familyName": null},
            "tags": ["example"]
        });
        assert_eq!(
            merge_patch(&original, &patch),
            json!({
                "title": "Hello!",
                "author": {"givenName": "John"},
                "tags": ["example"],
                "content": "This will be unchanged",
                "phoneNumber": "+01-123-456-7890"
            })
        );
    }

    #[test]
    fn a_patch_onto_a_missing_member_starts_from_nothing() {
        // `Target[Name]` undefined: nulls deep in the patch have nothing to remove.
        assert_eq!(
            merge_patch(&json!({"x": 1}), &json!({"y": {"z": null, "w": 2}})),
            json!({"x": 1, "y": {"w": 2}})
        );
    }
}
