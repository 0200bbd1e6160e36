//! The events page's kind filter offers every kind the server records: the
//! list in assets/lists.js is written by hand, so a kind added to
//! `rackboot_core::EventKind` without it could never be filtered on.

use std::collections::BTreeSet;

#[test]
fn the_event_filter_lists_every_event_kind() {
    let js = include_str!("../assets/lists.js");
    let start = js
        .find("const EVENT_KINDS = [")
        .expect("EVENT_KINDS in lists.js");
    let end = start + js[start..].find("];").expect("the end of EVENT_KINDS");
    let listed: BTreeSet<&str> = js[start..end].split('"').skip(1).step_by(2).collect();
    let recorded: BTreeSet<&str> = rackboot_core::EventKind::ALL
        .iter()
        .map(|k| k.as_str())
        .collect();
    let missing: Vec<_> = recorded.difference(&listed).collect();
    let unknown: Vec<_> = listed.difference(&recorded).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "lists.js EVENT_KINDS: missing {missing:?}, not event kinds {unknown:?}"
    );
}
