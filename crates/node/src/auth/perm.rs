//! Key intervals and whether a set of permissions covers a request.
//!
//! etcd's rule (its `range_perm_cache`): a request on `[key, range_end)`
//! is permitted when the union of the user's permission intervals of the
//! right type contains the whole requested interval. Permissions are
//! merged first, so `[a, c)` granted as `[a, b)` and `[b, c)` covers a
//! request on `[a, c)`.

use std::cmp::Ordering;

use bytes::Bytes;

/// A half-open key interval `[start, end)`; `end` `None` is unbounded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyInterval {
    /// The first key.
    pub start: Bytes,
    /// The first key past the interval; `None`: no end.
    pub end: Option<Bytes>,
}

impl KeyInterval {
    /// The interval etcd's `(key, range_end)` convention names: the single
    /// key when `range_end` is empty (`[key, key + "\0")`), every key from
    /// `key` on when it is `"\0"`, `[key, range_end)` otherwise.
    pub fn of(key: &[u8], range_end: &[u8]) -> KeyInterval {
        let start = Bytes::copy_from_slice(key);
        let end = match range_end {
            [] => {
                let mut next = key.to_vec();
                next.push(0);
                Some(Bytes::from(next))
            }
            [0] => None,
            end => Some(Bytes::copy_from_slice(end)),
        };
        KeyInterval { start, end }
    }

    /// Whether the interval holds no key (`end <= start`).
    pub fn is_empty(&self) -> bool {
        self.end.as_ref().is_some_and(|end| end <= &self.start)
    }
}

/// Orders interval ends, `None` (unbounded) last.
fn cmp_end(a: Option<&Bytes>, b: Option<&Bytes>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(a), Some(b)) => a.cmp(b),
    }
}

/// Whether the union of `granted` contains all of `want`. An empty `want`
/// (a range whose end is not past its start) is treated as its first key,
/// so a malformed request never slips through on an empty interval.
pub fn covers(granted: impl IntoIterator<Item = KeyInterval>, want: &KeyInterval) -> bool {
    let want = if want.is_empty() { KeyInterval::of(&want.start, &[]) } else { want.clone() };
    let mut intervals: Vec<KeyInterval> = granted.into_iter().filter(|i| !i.is_empty()).collect();
    intervals.sort_by(|a, b| a.start.cmp(&b.start));
    // Merge in order; the merged interval holding `want.start` decides.
    let mut merged: Option<KeyInterval> = None;
    for next in intervals {
        match &mut merged {
            Some(cur) if cur.end.as_ref().is_none_or(|end| next.start <= *end) => {
                if cmp_end(next.end.as_ref(), cur.end.as_ref()) == Ordering::Greater {
                    cur.end = next.end;
                }
            }
            _ => {
                if let Some(done) = merged.take()
                    && contains(&done, &want)
                {
                    return true;
                }
                merged = Some(next);
            }
        }
    }
    merged.is_some_and(|last| contains(&last, &want))
}

fn contains(outer: &KeyInterval, inner: &KeyInterval) -> bool {
    outer.start <= inner.start
        && cmp_end(inner.end.as_ref(), outer.end.as_ref()) != Ordering::Greater
}
