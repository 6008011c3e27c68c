//! Threading, JWZ-style, as pure functions over what the store knows.
//!
//! Every Message-ID a message names (its own, its References and its
//! In-Reply-To) is a *container*. Containers without a stored message are
//! placeholders: they hold a thread together until the missing message
//! arrives. A thread is the set of containers linked by references, so:
//! - a reply that arrives before its parent creates the parent's
//!   placeholder, and the parent later lands in the same thread;
//! - a message that links two threads (the missing parent of both) merges
//!   them into the older one; the other id stays resolvable as an alias.
//!
//! The normalized subject is used only when a message names no other
//! message at all (no References, no In-Reply-To).

/// The Message-IDs a message refers to, oldest ancestor first and its
/// direct parent last: References in order, then In-Reply-To if References
/// did not already end with it. Duplicates and the message's own id are
/// dropped (a message cannot be its own ancestor).
pub fn ancestry(own: Option<&str>, in_reply_to: &[String], references: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for id in references.iter().chain(in_reply_to.iter().take(1)) {
        let id = id.trim();
        if id.is_empty() || Some(id) == own {
            continue;
        }
        if let Some(pos) = out.iter().position(|seen| seen == id) {
            // Keep the latest position: the parent must stay last.
            out.remove(pos);
        }
        out.push(id.to_string());
    }
    out
}

/// A subject without reply and forward prefixes (`Re:`, `RE[2]:`, `Fwd:`,
/// `AW:`, ...), with whitespace collapsed and lower-cased; and whether it
/// had a reply prefix (only replies may join a thread by subject).
pub fn normalize_subject(subject: &str) -> (String, bool) {
    const PREFIXES: &[&str] = &["re", "aw", "sv", "antw", "fw", "fwd", "wg", "tr"];
    const REPLY: &[&str] = &["re", "aw", "sv", "antw"];
    let mut rest = subject.trim();
    let mut reply = false;
    while let Some(colon) = rest.find(':') {
        let word = rest[..colon].trim();
        // `Re[2]` and `Re(2)` count as `Re`.
        let base = word
            .split(['[', '('])
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        if !PREFIXES.contains(&base.as_str()) {
            break;
        }
        reply |= REPLY.contains(&base.as_str());
        rest = rest[colon + 1..].trim_start();
    }
    let normalized = rest
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase();
    (normalized, reply)
}

/// A thread that already holds one of the new message's containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Existing {
    pub id: String,
    /// Creation order; the oldest thread survives a merge, so that the id a
    /// client saw first keeps naming the conversation.
    pub seq: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing links the message to a stored thread.
    New,
    Join(String),
    /// The message links several threads: they become `survivor`.
    Merge {
        survivor: String,
        absorbed: Vec<String>,
    },
}

/// Where a message goes, given the threads holding its containers.
pub fn decide(found: &[Existing]) -> Decision {
    let mut threads: Vec<&Existing> = Vec::new();
    for e in found {
        if !threads.iter().any(|t| t.id == e.id) {
            threads.push(e);
        }
    }
    threads.sort_by(|a, b| (a.seq, &a.id).cmp(&(b.seq, &b.id)));
    match threads.as_slice() {
        [] => Decision::New,
        [one] => Decision::Join(one.id.clone()),
        [survivor, rest @ ..] => Decision::Merge {
            survivor: survivor.id.clone(),
            absorbed: rest.iter().map(|t| t.id.clone()).collect(),
        },
    }
}

/// One stored message of a thread, for ordering.
#[derive(Debug, Clone)]
pub struct Node {
    pub message_id: Option<String>,
    /// `ancestry`, direct parent last.
    pub ancestry: Vec<String>,
    /// Sort key among siblings: the Date header (or arrival), then arrival.
    pub date: i64,
    pub seq: i64,
}

/// The reading order of a thread: depth-first over the reply tree,
/// siblings by date. Each message's parent is the nearest ancestor that is
/// itself stored in the thread (placeholders are skipped, so a reply to a
/// missing message hangs off whatever it quotes that is present). Returns
/// (index into `nodes`, parent index, depth) in order; every node appears
/// exactly once, even when references form a loop.
pub fn order(nodes: &[Node]) -> Vec<(usize, Option<usize>, usize)> {
    let index_of = |id: &str, me: usize| {
        nodes
            .iter()
            .enumerate()
            .filter(|(i, n)| *i != me && n.message_id.as_deref() == Some(id))
            .min_by_key(|(_, n)| (n.date, n.seq))
            .map(|(i, _)| i)
    };
    let parents: Vec<Option<usize>> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| n.ancestry.iter().rev().find_map(|id| index_of(id, i)))
        .collect();
    let key = |i: &usize| (nodes[*i].date, nodes[*i].seq);
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for (i, p) in parents.iter().enumerate() {
        if let Some(p) = p {
            children[*p].push(i);
        }
    }
    for c in &mut children {
        c.sort_by_key(key);
    }
    let mut by_date: Vec<usize> = (0..nodes.len()).collect();
    by_date.sort_by_key(key);
    let mut out = Vec::with_capacity(nodes.len());
    let mut visited = vec![false; nodes.len()];
    // Roots first; then whatever a reference loop kept unreachable, each
    // time starting from its earliest message.
    let roots = by_date.iter().copied().filter(|i| parents[*i].is_none());
    let starts: Vec<usize> = roots.chain(by_date.iter().copied()).collect();
    for start in starts {
        if visited[start] {
            continue;
        }
        let mut stack = vec![(start, 0usize)];
        while let Some((i, depth)) = stack.pop() {
            if visited[i] {
                continue;
            }
            visited[i] = true;
            let parent = parents[i].filter(|p| visited[*p]);
            out.push((i, parent, depth));
            for c in children[i].iter().rev() {
                if !visited[*c] {
                    stack.push((*c, depth + 1));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn ancestry_keeps_the_parent_last_and_drops_self_and_duplicates() {
        assert_eq!(
            ancestry(Some("c"), &ids(&["b"]), &ids(&["a", "b"])),
            ids(&["a", "b"])
        );
        // In-Reply-To alone (References missing) still names the parent.
        assert_eq!(ancestry(Some("c"), &ids(&["b"]), &[]), ids(&["b"]));
        // In-Reply-To that disagrees with References: it is the parent.
        assert_eq!(
            ancestry(Some("d"), &ids(&["a"]), &ids(&["a", "b", "d"])),
            ids(&["b", "a"])
        );
        assert!(ancestry(Some("a"), &ids(&["a"]), &[]).is_empty());
    }

    #[test]
    fn subjects_lose_reply_and_forward_prefixes() {
        assert_eq!(
            normalize_subject("Re: RE[2]:  Fwd: Quarterly   report"),
            ("quarterly report".into(), true)
        );
        assert_eq!(normalize_subject("Fwd: hello"), ("hello".into(), false));
        assert_eq!(normalize_subject("Hello"), ("hello".into(), false));
        assert_eq!(
            normalize_subject("Meeting: 10:00"),
            ("meeting: 10:00".into(), false)
        );
        assert_eq!(normalize_subject("AW: Angebot"), ("angebot".into(), true));
    }

    #[test]
    fn decisions_join_one_thread_and_merge_into_the_oldest() {
        let t = |id: &str, seq| Existing { id: id.into(), seq };
        assert_eq!(decide(&[]), Decision::New);
        assert_eq!(decide(&[t("x", 3), t("x", 3)]), Decision::Join("x".into()));
        assert_eq!(
            decide(&[t("new", 9), t("old", 2), t("mid", 5), t("new", 9)]),
            Decision::Merge {
                survivor: "old".into(),
                absorbed: ids(&["mid", "new"])
            }
        );
    }

    fn node(id: &str, ancestry: &[&str], date: i64) -> Node {
        Node {
            message_id: Some(id.into()),
            ancestry: ids(ancestry),
            date,
            seq: date,
        }
    }

    fn ordered(nodes: &[Node]) -> Vec<(String, usize)> {
        order(nodes)
            .into_iter()
            .map(|(i, _, depth)| (nodes[i].message_id.clone().unwrap(), depth))
            .collect()
    }

    #[test]
    fn order_is_depth_first_with_siblings_by_date_whatever_the_arrival() {
        // Stored in arrival order: replies before the root.
        let nodes = vec![
            node("c", &["a", "b"], 30),
            node("d", &["a"], 25),
            node("b", &["a"], 20),
            node("a", &[], 10),
        ];
        assert_eq!(
            ordered(&nodes),
            vec![
                ("a".into(), 0),
                ("b".into(), 1),
                ("c".into(), 2),
                ("d".into(), 1)
            ]
        );
    }

    #[test]
    fn a_missing_parent_is_skipped_to_the_nearest_present_ancestor() {
        let nodes = vec![node("a", &[], 1), node("c", &["a", "b"], 3)];
        let o = order(&nodes);
        assert_eq!(o[1], (1, Some(0), 1));
    }

    #[test]
    fn reference_loops_still_list_every_message_once() {
        let nodes = vec![node("a", &["b"], 1), node("b", &["a"], 2)];
        let o = ordered(&nodes);
        assert_eq!(o, vec![("a".into(), 0), ("b".into(), 1)]);
    }
}
