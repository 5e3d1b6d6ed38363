//! Metric series keyed by what senders and peers choose (service names, peer addresses): at most
//! `MAX_SERIES` per metric and each label at most `MAX_LABEL_BYTES`, so that their memory is
//! bounded whatever arrives. Past the limit, values go to one overflow series (the OpenTelemetry
//! SDKs' cardinality limit: `otel.metric.overflow = true`), and the values folded there are
//! counted.

use std::collections::BTreeMap;

/// Series one metric keeps.
pub(crate) const MAX_SERIES: usize = 2000;
/// The longest label value kept; longer ones are cut at a character boundary.
pub(crate) const MAX_LABEL_BYTES: usize = 256;

/// `label` cut to `max_bytes` at a character boundary.
pub(crate) fn bounded(label: &str, max_bytes: usize) -> &str {
    if label.len() <= max_bytes {
        return label;
    }
    let mut end = max_bytes;
    while !label.is_char_boundary(end) {
        end -= 1;
    }
    &label[..end]
}

/// Values per key, up to `MAX_SERIES` keys, the rest in an overflow value.
#[derive(Debug)]
pub(crate) struct CappedSeries<K: Ord, V> {
    series: BTreeMap<K, V>,
    overflow: Option<V>,
    max_series: usize,
    /// Values added to the overflow series.
    pub(crate) overflowed: u64,
}

impl<K: Ord, V: Default> Default for CappedSeries<K, V> {
    fn default() -> Self {
        Self::new(MAX_SERIES)
    }
}

impl<K: Ord, V: Default> CappedSeries<K, V> {
    pub(crate) fn new(max_series: usize) -> Self {
        Self {
            series: BTreeMap::new(),
            overflow: None,
            max_series,
            overflowed: 0,
        }
    }

    /// The value of `key`'s series, or of the overflow series once the limit is reached.
    pub(crate) fn entry(&mut self, key: K) -> &mut V {
        if self.series.len() < self.max_series || self.series.contains_key(&key) {
            return self.series.entry(key).or_default();
        }
        self.overflowed += 1;
        self.overflow.get_or_insert_with(V::default)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.series.iter()
    }

    pub(crate) fn overflow(&self) -> Option<&V> {
        self.overflow.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_limit_values_go_to_the_overflow_series() {
        let mut s: CappedSeries<String, u64> = CappedSeries::new(2);
        *s.entry("a".into()) += 1;
        *s.entry("b".into()) += 1;
        *s.entry("c".into()) += 5;
        *s.entry("a".into()) += 1;
        *s.entry("d".into()) += 2;
        let kept: Vec<_> = s.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(kept, vec![("a", 2), ("b", 1)]);
        assert_eq!(s.overflow(), Some(&7));
        assert_eq!(s.overflowed, 2);
    }

    #[test]
    fn labels_are_cut_at_a_character_boundary() {
        assert_eq!(bounded("shop", 256), "shop");
        assert_eq!(bounded("ééé", 3), "é");
        assert_eq!(bounded("abcdef", 4), "abcd");
        assert_eq!(bounded("", 0), "");
    }
}
