//! Which queued workflows may start: a global limit, per-label limits (at
//! most N running on machines that share a label value, e.g. a rack), and
//! per-batch limits (`rackboot deploy --parallel N`). Pure and
//! deterministic: oldest first, and a workflow that cannot start says why.

use std::collections::{BTreeMap, HashMap};

use rackboot_core::{Batch, WorkflowId};

/// A workflow as the queue sees it.
#[derive(Debug, Clone)]
pub struct Slot<'a> {
    pub id: WorkflowId,
    pub labels: &'a BTreeMap<String, String>,
    pub batch: Option<Batch>,
}

/// The decision for the queued workflows, in queue order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    Start,
    /// Stays queued; the reason is shown to operators.
    Wait(String),
}

/// Decides for `queued` (oldest first) given what `running` holds.
pub fn admit(
    running: &[Slot],
    queued: &[Slot],
    max_running: usize,
    label_limits: &BTreeMap<String, usize>,
) -> Vec<(WorkflowId, Admission)> {
    let mut total = running.len();
    let mut per_label: HashMap<(&str, &str), usize> = HashMap::new();
    let mut per_batch: HashMap<uuid::Uuid, usize> = HashMap::new();
    for r in running {
        count(r, label_limits, &mut per_label, &mut per_batch);
    }
    let mut out = Vec::with_capacity(queued.len());
    for q in queued {
        let verdict = if total >= max_running {
            Admission::Wait(format!(
                "a free slot ({total} of {max_running} workflows running)"
            ))
        } else if let Some((key, value, limit)) = label_limits.iter().find_map(|(key, &limit)| {
            let value = q.labels.get(key)?;
            (per_label
                .get(&(key.as_str(), value.as_str()))
                .copied()
                .unwrap_or(0)
                >= limit)
                .then_some((key, value, limit))
        }) {
            Admission::Wait(format!(
                "a free slot for {key}={value} (limit {limit} running)"
            ))
        } else if let Some(b) = q.batch
            && per_batch.get(&b.id).copied().unwrap_or(0) >= b.limit as usize
        {
            Admission::Wait(format!("its batch ({} of its machines at a time)", b.limit))
        } else {
            total += 1;
            count(q, label_limits, &mut per_label, &mut per_batch);
            Admission::Start
        };
        out.push((q.id, verdict));
    }
    out
}

fn count<'a>(
    s: &Slot<'a>,
    label_limits: &'a BTreeMap<String, usize>,
    per_label: &mut HashMap<(&'a str, &'a str), usize>,
    per_batch: &mut HashMap<uuid::Uuid, usize>,
) {
    for key in label_limits.keys() {
        if let Some(value) = s.labels.get(key) {
            *per_label.entry((key.as_str(), value.as_str())).or_default() += 1;
        }
    }
    if let Some(b) = s.batch {
        *per_batch.entry(b.id).or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(rack: &str) -> BTreeMap<String, String> {
        BTreeMap::from([("rack".to_string(), rack.to_string())])
    }

    #[test]
    fn global_label_and_batch_limits() {
        let r1 = labels("r1");
        let r2 = labels("r2");
        let none = BTreeMap::new();
        let batch = Batch {
            id: uuid::Uuid::new_v4(),
            limit: 1,
        };
        let id = |n: u128| uuid::Uuid::from_u128(n);
        let running = [Slot {
            id: id(1),
            labels: &r1,
            batch: None,
        }];
        let queued = [
            Slot {
                id: id(2),
                labels: &r1,
                batch: None,
            },
            Slot {
                id: id(3),
                labels: &r2,
                batch: Some(batch),
            },
            Slot {
                id: id(4),
                labels: &none,
                batch: Some(batch),
            },
            Slot {
                id: id(5),
                labels: &none,
                batch: None,
            },
            Slot {
                id: id(6),
                labels: &r2,
                batch: None,
            },
        ];
        let limits = BTreeMap::from([("rack".to_string(), 1)]);
        let got = admit(&running, &queued, 3, &limits);
        assert_eq!(
            got[0].1,
            Admission::Wait("a free slot for rack=r1 (limit 1 running)".into())
        );
        assert_eq!(got[1].1, Admission::Start);
        assert_eq!(
            got[2].1,
            Admission::Wait("its batch (1 of its machines at a time)".into())
        );
        assert_eq!(got[3].1, Admission::Start);
        // 3 running now (1, then 3 and 5): the global limit comes first.
        assert!(matches!(&got[4].1, Admission::Wait(w) if w.contains("3 of 3")));
    }
}
