//! Checking the counters an independent subscriber received.

use std::collections::BTreeSet;
use std::fmt::Write as _;

/// At most this many items of a list are printed in a failure message.
const SHOWN: usize = 20;

/// The `<prefix><N>` payloads a subscriber received, in arrival order, and what is wrong with them.
///
/// ```
/// use satmqtt_tests::Sequence;
/// let seq = Sequence::parse("p-", &["p-0", "p-1", "p-1", "p-4", "p-2"]);
/// assert_eq!((seq.first, seq.last, seq.count), (Some(0), Some(2), 5));
/// assert_eq!(seq.gaps, vec![(3, 3)]);
/// assert_eq!((seq.duplicates, seq.out_of_order), (1, 1));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sequence {
    /// The payload prefix the numbers follow.
    pub prefix: String,
    /// Every parsed N, in arrival order (duplicates included).
    pub numbers: Vec<u64>,
    /// Payloads that are not `<prefix><decimal N>`.
    pub unparsable: Vec<String>,
    /// The first N received.
    pub first: Option<u64>,
    /// The last N received.
    pub last: Option<u64>,
    /// How many payloads parsed (duplicates included).
    pub count: usize,
    /// Missing N between the smallest and the largest received, as inclusive ranges, ascending.
    pub gaps: Vec<(u64, u64)>,
    /// Payloads whose N had already been received.
    pub duplicates: u64,
    /// Payloads whose N is new but smaller than one received before it.
    pub out_of_order: u64,
}

impl Sequence {
    /// Parses payloads of the form `<prefix><N>`.
    pub fn parse<S: AsRef<str>>(prefix: &str, payloads: &[S]) -> Sequence {
        let mut numbers = Vec::with_capacity(payloads.len());
        let mut unparsable = Vec::new();
        for payload in payloads {
            let payload = payload.as_ref();
            match parse_counter(prefix, payload) {
                Some(n) => numbers.push(n),
                None => unparsable.push(payload.to_string()),
            }
        }
        let mut seen = BTreeSet::new();
        let mut duplicates = 0;
        let mut out_of_order = 0;
        let mut highest: Option<u64> = None;
        for &n in &numbers {
            if !seen.insert(n) {
                duplicates += 1;
            } else if highest.is_some_and(|h| n < h) {
                out_of_order += 1;
            }
            highest = highest.max(Some(n));
        }
        let gaps = match (seen.first(), seen.last()) {
            (Some(&lo), Some(&hi)) => missing_ranges(&seen, lo, hi),
            _ => Vec::new(),
        };
        Sequence {
            prefix: prefix.to_string(),
            first: numbers.first().copied(),
            last: numbers.last().copied(),
            count: numbers.len(),
            numbers,
            unparsable,
            gaps,
            duplicates,
            out_of_order,
        }
    }

    /// Ranges of `start .. start + count` that were never received, inclusive, ascending.
    pub fn missing_in(&self, start: u64, count: u64) -> Vec<(u64, u64)> {
        if count == 0 {
            return Vec::new();
        }
        let seen: BTreeSet<u64> = self.numbers.iter().copied().collect();
        missing_ranges(&seen, start, start + count - 1)
    }

    /// Received N outside `start .. start + count`, in arrival order.
    pub fn outside(&self, start: u64, count: u64) -> Vec<u64> {
        self.numbers
            .iter()
            .copied()
            .filter(|&n| n < start || n >= start + count)
            .collect()
    }

    /// Whether exactly `<prefix>start ..= <prefix>(start + count - 1)` arrived, in order, once each,
    /// and nothing else.
    pub fn is_contiguous(&self, start: u64, count: u64) -> bool {
        self.unparsable.is_empty()
            && self.numbers.len() as u64 == count
            && self.numbers.iter().zip(start..).all(|(&n, want)| n == want)
    }

    /// Panics with a readable report unless [`Sequence::is_contiguous`] holds.
    #[track_caller]
    pub fn assert_contiguous(&self, start: u64, count: u64) {
        if !self.is_contiguous(start, count) {
            panic!("{}", self.report(start, count));
        }
    }

    /// Panics unless every counter of `start .. start + count` arrived, in order, and nothing
    /// else; returns the duplicates (QoS 1 allows them where a connection died with messages in
    /// flight).
    #[track_caller]
    pub fn assert_no_loss(&self, start: u64, count: u64) -> u64 {
        let ok = self.unparsable.is_empty()
            && self.missing_in(start, count).is_empty()
            && self.outside(start, count).is_empty()
            && self.out_of_order == 0;
        assert!(
            ok,
            "messages lost or reordered:\n{}",
            self.report(start, count)
        );
        self.duplicates
    }

    /// A multi-line description of how the received payloads differ from the expected range.
    pub fn report(&self, start: u64, count: u64) -> String {
        let p = &self.prefix;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "expected {p}{start} ..= {p}{} ({count} messages, in order, once each); received {} payloads",
            (start + count).saturating_sub(1),
            self.count + self.unparsable.len(),
        );
        let show = |n: Option<u64>| n.map_or("-".to_string(), |n| n.to_string());
        let _ = writeln!(
            out,
            "  parsed: {}, first: {}, last: {}, duplicates: {}, out of order: {}",
            self.count,
            show(self.first),
            show(self.last),
            self.duplicates,
            self.out_of_order
        );
        let _ = writeln!(
            out,
            "  missing from the range: {}",
            ranges(&self.missing_in(start, count))
        );
        let _ = writeln!(
            out,
            "  outside the range: {}",
            list(&self.outside(start, count))
        );
        let _ = writeln!(out, "  not `{p}<N>`: {}", list(&self.unparsable));
        if let Some((index, (&got, want))) = self
            .numbers
            .iter()
            .zip(start..start + count)
            .enumerate()
            .find(|(_, (&got, want))| got != *want)
        {
            let _ = writeln!(
                out,
                "  first difference at position {index}: expected {want}, got {got}"
            );
        }
        out
    }
}

fn parse_counter(prefix: &str, payload: &str) -> Option<u64> {
    let digits = payload.strip_prefix(prefix)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn missing_ranges(seen: &BTreeSet<u64>, lo: u64, hi: u64) -> Vec<(u64, u64)> {
    let mut gaps = Vec::new();
    let mut next = lo;
    for &n in seen.range(lo..=hi) {
        if n > next {
            gaps.push((next, n - 1));
        }
        next = n + 1;
    }
    if next <= hi {
        gaps.push((next, hi));
    }
    gaps
}

fn ranges(ranges: &[(u64, u64)]) -> String {
    let items: Vec<String> = ranges
        .iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}..={b}")
            }
        })
        .collect();
    list(&items)
}

fn list<T: std::fmt::Debug>(items: &[T]) -> String {
    if items.is_empty() {
        return "none".to_string();
    }
    let shown: Vec<String> = items.iter().take(SHOWN).map(|i| format!("{i:?}")).collect();
    let more = items.len().saturating_sub(SHOWN);
    if more > 0 {
        format!("{} and {more} more", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payloads(ns: &[u64]) -> Vec<String> {
        ns.iter().map(|n| format!("samplepayload{n}")).collect()
    }

    #[test]
    fn a_clean_run_is_contiguous() {
        let seq = Sequence::parse("samplepayload", &payloads(&[0, 1, 2, 3]));
        assert_eq!(seq.first, Some(0));
        assert_eq!(seq.last, Some(3));
        assert_eq!(seq.count, 4);
        assert!(seq.gaps.is_empty());
        assert_eq!((seq.duplicates, seq.out_of_order), (0, 0));
        seq.assert_contiguous(0, 4);
    }

    #[test]
    fn gaps_are_reported_as_inclusive_ranges() {
        let seq = Sequence::parse("samplepayload", &payloads(&[0, 1, 4, 5, 7, 10]));
        assert_eq!(seq.gaps, vec![(2, 3), (6, 6), (8, 9)]);
        assert_eq!(
            seq.missing_in(0, 12),
            vec![(2, 3), (6, 6), (8, 9), (11, 11)]
        );
        assert!(!seq.is_contiguous(0, 12));
    }

    #[test]
    fn duplicates_are_counted_and_not_mistaken_for_reordering() {
        // A QoS1 republish after a reconnect: 2 and 3 arrive twice.
        let seq = Sequence::parse("samplepayload", &payloads(&[0, 1, 2, 3, 2, 3, 4]));
        assert_eq!(seq.duplicates, 2);
        assert_eq!(seq.out_of_order, 0);
        assert!(seq.gaps.is_empty());
        assert!(!seq.is_contiguous(0, 5));
    }

    #[test]
    fn late_arrivals_are_out_of_order() {
        let seq = Sequence::parse("samplepayload", &payloads(&[0, 2, 1, 3]));
        assert_eq!(seq.out_of_order, 1);
        assert_eq!(seq.duplicates, 0);
        assert!(seq.gaps.is_empty());
        assert!(!seq.is_contiguous(0, 4));
    }

    #[test]
    fn foreign_payloads_are_kept_aside() {
        let seq = Sequence::parse("p-", &["p-7", "hello", "p-", "p-8x", "p-8"]);
        assert_eq!(seq.numbers, vec![7, 8]);
        assert_eq!(seq.unparsable, vec!["hello", "p-", "p-8x"]);
        assert!(!seq.is_contiguous(7, 2));
        assert!(Sequence::parse("p-", &["p-7", "p-8"]).is_contiguous(7, 2));
    }

    #[test]
    fn start_offset_and_values_outside_the_range() {
        let seq = Sequence::parse("p-", &["p-999", "p-1000", "p-1001", "p-1003"]);
        assert_eq!(seq.outside(1000, 3), vec![999, 1003]);
        assert_eq!(seq.missing_in(1000, 2), vec![]);
        assert_eq!(seq.missing_in(1000, 3), vec![(1002, 1002)]);
        assert_eq!(seq.missing_in(1000, 5), vec![(1002, 1002), (1004, 1004)]);
    }

    #[test]
    fn empty_input() {
        let seq = Sequence::parse::<&str>("p", &[]);
        assert_eq!((seq.first, seq.last, seq.count), (None, None, 0));
        assert!(seq.gaps.is_empty());
        assert!(seq.is_contiguous(5, 0));
        assert!(!seq.is_contiguous(0, 1));
    }

    #[test]
    fn failure_report_names_what_is_wrong() {
        let seq = Sequence::parse("samplepayload", &payloads(&[0, 1, 3, 3, 2]));
        let report = seq.report(0, 5);
        assert!(
            report.contains("expected samplepayload0 ..= samplepayload4 (5 messages"),
            "{report}"
        );
        assert!(
            report.contains("duplicates: 1, out of order: 1"),
            "{report}"
        );
        assert!(report.contains("missing from the range: \"4\""), "{report}");
        assert!(
            report.contains("first difference at position 2: expected 2, got 3"),
            "{report}"
        );
    }

    #[test]
    #[should_panic(expected = "missing from the range: \"2..=3\"")]
    fn assert_contiguous_panics_with_the_report() {
        Sequence::parse("samplepayload", &payloads(&[0, 1, 4])).assert_contiguous(0, 5);
    }
}
