//! Time summed per key (a neighbour's tgid, a waker's, a device, a lock's releaser) over a
//! window query. A query meets one to a few keys, and runs per thread per span: a short list
//! searched in place costs less than hashing each addition, and nothing is allocated until the
//! first key.

/// Nanoseconds per `u32` key, in the order the keys first came.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct TimeByKey {
    entries: Vec<(u32, u64)>,
}

impl TimeByKey {
    /// Adds `ns` to `key`'s time.
    pub(crate) fn add(&mut self, key: u32, ns: u64) {
        match self.entries.iter_mut().find(|(k, _)| *k == key) {
            Some((_, total)) => *total += ns,
            None => self.entries.push((key, ns)),
        }
    }

    pub(crate) fn get(&self, key: u32) -> Option<u64> {
        self.entries
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, ns)| *ns)
    }

    pub(crate) fn get_mut(&mut self, key: u32) -> Option<&mut u64> {
        self.entries
            .iter_mut()
            .find(|(k, _)| *k == key)
            .map(|(_, ns)| ns)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.entries.iter().copied()
    }

    /// The key with the most time, the lowest key of a tie; `None` when empty.
    pub(crate) fn top(&self) -> Option<u32> {
        self.iter()
            .max_by_key(|&(key, ns)| (ns, std::cmp::Reverse(key)))
            .map(|(key, _)| key)
    }
}

impl IntoIterator for TimeByKey {
    type Item = (u32, u64);
    type IntoIter = std::vec::IntoIter<(u32, u64)>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

impl FromIterator<(u32, u64)> for TimeByKey {
    fn from_iter<I: IntoIterator<Item = (u32, u64)>>(iter: I) -> Self {
        let mut out = Self::default();
        for (key, ns) in iter {
            out.add(key, ns);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_per_key_and_names_the_largest() {
        let mut t = TimeByKey::default();
        assert_eq!(t.top(), None);
        t.add(7, 10);
        t.add(3, 25);
        t.add(7, 20);
        assert_eq!((t.get(7), t.get(3), t.get(9)), (Some(30), Some(25), None));
        assert_eq!(t.top(), Some(7));
        // A tie goes to the lower key, whatever the order of arrival.
        t.add(3, 5);
        assert_eq!(t.top(), Some(3));
        *t.get_mut(7).unwrap() += 1;
        assert_eq!(t.top(), Some(7));
        assert_eq!(t.iter().count(), 2);
        let again: TimeByKey = t.clone().into_iter().collect();
        assert_eq!(again, t);
    }
}
