//! Following a topic as a client does: [`Follower`] keeps one topic's state from
//! `snapshot`, `patch` and `removed` messages, with the [oracle](crate::merge_patch), and
//! checks the delivery rules on the way.

use serde_json::Value;

use crate::merge_patch::merge_apply;

/// A client's copy of one topic, kept from `snapshot`/`patch`/`removed` messages while
/// checking the delivery rules (a patch is always previous rev + 1; revs never go back).
#[derive(Debug, Default)]
pub struct Follower {
    pub rev: u64,
    /// `None` until the first snapshot, or after `removed`.
    pub state: Option<Value>,
    pub snapshots: usize,
    pub patches: usize,
    pub lagged: usize,
}

impl Follower {
    /// Takes one message about the followed topic (or `lagged`); panics on a rule broken.
    pub fn take(&mut self, message: &Value) {
        let rev = message["rev"].as_u64();
        match message["type"].as_str() {
            Some("snapshot") => {
                let rev = rev.expect("snapshot rev");
                assert!(rev >= self.rev, "snapshot rev {rev} after rev {}", self.rev);
                self.rev = rev;
                self.state = Some(message["state"].clone());
                self.snapshots += 1;
            }
            Some("patch") => {
                let rev = rev.expect("patch rev");
                assert_eq!(rev, self.rev + 1, "patch out of order: {message}");
                let state = self.state.as_mut().expect("a patch before any snapshot");
                merge_apply(state, &message["patch"]);
                self.rev = rev;
                self.patches += 1;
            }
            Some("removed") => {
                let rev = rev.expect("removed rev");
                assert!(rev > self.rev, "removed rev {rev} after rev {}", self.rev);
                self.rev = rev;
                self.state = None;
            }
            Some("lagged") => self.lagged += 1,
            _ => panic!("unexpected message for a followed topic: {message}"),
        }
    }
}
