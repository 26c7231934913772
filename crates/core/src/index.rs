//! The subscription index: which subscribers' patterns match a topic, without scanning them.
//!
//! Patterns are stored in a trie keyed by segment, with `+` and `#` as their own branches.
//! Matching a topic walks at most one literal branch and one `+` branch per segment, so the
//! cost depends on the topic's depth and the wildcards that match, not on how many patterns
//! or topics exist.

use std::collections::HashMap;

use crate::topic::Pattern;

/// A trie from patterns to the subscribers (`K`) that hold them.
#[derive(Debug)]
pub struct PatternIndex<K> {
    root: Node<K>,
}

#[derive(Debug)]
struct Node<K> {
    literal: HashMap<Box<str>, Node<K>>,
    plus: Option<Box<Node<K>>>,
    /// Subscribers whose pattern ends here with `#`.
    rest: Vec<K>,
    /// Subscribers whose pattern ends exactly here.
    exact: Vec<K>,
}

impl<K> Default for Node<K> {
    fn default() -> Self {
        Node {
            literal: HashMap::new(),
            plus: None,
            rest: Vec::new(),
            exact: Vec::new(),
        }
    }
}

impl<K> Node<K> {
    fn is_empty(&self) -> bool {
        self.literal.is_empty()
            && self.plus.is_none()
            && self.rest.is_empty()
            && self.exact.is_empty()
    }
}

impl<K> Default for PatternIndex<K> {
    fn default() -> Self {
        PatternIndex {
            root: Node::default(),
        }
    }
}

impl<K: Copy + PartialEq> PatternIndex<K> {
    /// Records that `key` holds `pattern`. The caller avoids inserting the same pair twice.
    pub fn insert(&mut self, pattern: &Pattern, key: K) {
        let mut node = &mut self.root;
        for segment in pattern.segments() {
            match segment {
                "#" => {
                    node.rest.push(key);
                    return;
                }
                "+" => node = node.plus.get_or_insert_with(Box::default),
                literal => node = node.literal.entry(literal.into()).or_default(),
            }
        }
        node.exact.push(key);
    }

    /// Forgets that `key` holds `pattern`; returns whether it did.
    pub fn remove(&mut self, pattern: &Pattern, key: K) -> bool {
        let segments: Vec<&str> = pattern.segments().collect();
        remove_from(&mut self.root, &segments, key)
    }

    /// Calls `found` for every subscriber with a pattern matching `topic`, once per
    /// matching pattern (a subscriber with two matching patterns is found twice).
    pub fn for_each_match(&self, topic: &str, mut found: impl FnMut(K)) {
        let segments: Vec<&str> = topic.split('/').collect();
        walk(&self.root, &segments, &mut found);
    }

    pub fn is_empty(&self) -> bool {
        self.root.is_empty()
    }
}

fn walk<K: Copy>(node: &Node<K>, segments: &[&str], found: &mut impl FnMut(K)) {
    node.rest.iter().for_each(|k| found(*k));
    let Some((first, rest)) = segments.split_first() else {
        node.exact.iter().for_each(|k| found(*k));
        return;
    };
    if let Some(child) = node.literal.get(*first) {
        walk(child, rest, found);
    }
    if let Some(child) = &node.plus {
        walk(child, rest, found);
    }
}

fn remove_from<K: PartialEq>(node: &mut Node<K>, segments: &[&str], key: K) -> bool {
    let Some((first, rest)) = segments.split_first() else {
        return remove_key(&mut node.exact, key);
    };
    match *first {
        "#" => remove_key(&mut node.rest, key),
        "+" => match node.plus.as_deref_mut() {
            Some(child) => {
                let removed = remove_from(child, rest, key);
                if child.is_empty() {
                    node.plus = None;
                }
                removed
            }
            None => false,
        },
        literal => match node.literal.get_mut(literal) {
            Some(child) => {
                let removed = remove_from(child, rest, key);
                if child.is_empty() {
                    node.literal.remove(literal);
                }
                removed
            }
            None => false,
        },
    }
}

fn remove_key<K: PartialEq>(keys: &mut Vec<K>, key: K) -> bool {
    match keys.iter().position(|k| *k == key) {
        Some(i) => {
            keys.swap_remove(i);
            true
        }
        None => false,
    }
}

/// Every topic the hub holds, by segment, so the topics matching a pattern are found
/// without scanning all of them.
#[derive(Debug, Default)]
pub struct TopicTree {
    root: TreeNode,
}

#[derive(Debug, Default)]
struct TreeNode {
    children: HashMap<Box<str>, TreeNode>,
    slot: Option<u32>,
}

impl TopicTree {
    /// Records `topic` (assumed valid) as held in `slot`.
    pub fn insert(&mut self, topic: &str, slot: u32) {
        let mut node = &mut self.root;
        for segment in topic.split('/') {
            node = node.children.entry(segment.into()).or_default();
        }
        node.slot = Some(slot);
    }

    /// Calls `found` with the slot of every topic matching `pattern`.
    pub fn for_each_match(&self, pattern: &Pattern, mut found: impl FnMut(u32)) {
        let segments: Vec<&str> = pattern.segments().collect();
        tree_walk(&self.root, &segments, &mut found);
    }
}

fn tree_walk(node: &TreeNode, segments: &[&str], found: &mut impl FnMut(u32)) {
    let Some((first, rest)) = segments.split_first() else {
        if let Some(slot) = node.slot {
            found(slot);
        }
        return;
    };
    match *first {
        "#" => tree_all(node, found),
        "+" => node
            .children
            .values()
            .for_each(|child| tree_walk(child, rest, found)),
        literal => {
            if let Some(child) = node.children.get(literal) {
                tree_walk(child, rest, found);
            }
        }
    }
}

fn tree_all(node: &TreeNode, found: &mut impl FnMut(u32)) {
    if let Some(slot) = node.slot {
        found(slot);
    }
    node.children
        .values()
        .for_each(|child| tree_all(child, found));
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn matches(index: &PatternIndex<u32>, topic: &str) -> Vec<u32> {
        let mut found = Vec::new();
        index.for_each_match(topic, |k| found.push(k));
        found.sort();
        found
    }

    #[test]
    fn finds_literal_plus_and_rest() {
        let mut index = PatternIndex::default();
        let p = |s: &str| Pattern::new(s).unwrap();
        index.insert(&p("#"), 1);
        index.insert(&p("a/+"), 2);
        index.insert(&p("a/b"), 3);
        index.insert(&p("a/#"), 4);
        index.insert(&p("+/b/#"), 5);
        assert_eq!(matches(&index, "a/b"), vec![1, 2, 3, 4, 5]);
        assert_eq!(matches(&index, "a"), vec![1, 4]);
        assert_eq!(matches(&index, "x/b"), vec![1, 5]);
        assert_eq!(matches(&index, "a/c/d"), vec![1, 4]);
        assert!(index.remove(&p("a/+"), 2));
        assert!(!index.remove(&p("a/+"), 2));
        assert_eq!(matches(&index, "a/b"), vec![1, 3, 4, 5]);
        for (pattern, key) in [("#", 1), ("a/b", 3), ("a/#", 4), ("+/b/#", 5)] {
            assert!(index.remove(&p(pattern), key));
        }
        assert!(index.is_empty());
    }

    proptest! {
        #[test]
        fn topic_tree_agrees_with_pattern_matches(
            topics in prop::collection::btree_set("(a|b|c)(/(a|b|c)){0,3}", 1..20),
            pattern in "(a|b|\\+)(/(a|b|\\+)){0,2}(/#)?|#",
        ) {
            let mut tree = TopicTree::default();
            let topics: Vec<String> = topics.into_iter().collect();
            for (slot, topic) in topics.iter().enumerate() {
                tree.insert(topic, slot as u32);
            }
            let pattern = Pattern::new(&pattern).unwrap();
            let mut found = Vec::new();
            tree.for_each_match(&pattern, |s| found.push(s as usize));
            found.sort();
            let expected: Vec<usize> = (0..topics.len()).filter(|&i| pattern.matches(&topics[i])).collect();
            prop_assert_eq!(found, expected);
        }

        #[test]
        fn agrees_with_pattern_matches(
            patterns in prop::collection::vec("(a|b|\\+)(/(a|b|\\+)){0,2}(/#)?|#", 1..12),
            topic in "(a|b|c)(/(a|b|c)){0,3}",
        ) {
            let mut index = PatternIndex::default();
            let parsed: Vec<Pattern> = patterns.iter().map(|p| Pattern::new(p).unwrap()).collect();
            for (key, pattern) in parsed.iter().enumerate() {
                index.insert(pattern, key);
            }
            let mut found = Vec::new();
            index.for_each_match(&topic, |k| found.push(k));
            found.sort();
            let expected: Vec<usize> = parsed
                .iter()
                .enumerate()
                .filter(|(_, p)| p.matches(&topic))
                .map(|(k, _)| k)
                .collect();
            prop_assert_eq!(found, expected);
        }
    }
}
