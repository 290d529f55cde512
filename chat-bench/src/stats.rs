//! Delivery bookkeeping: loss, gaps, duplicates and latency, per receiving client.
//!
//! Each receiving client owns a [`DeliveryTracker`] (no locks on the hot path); the
//! scenario merges them at the end. A message counts for the measured window when its
//! *send* time (from its [`Tag`]) falls in the window, so `expected − received` is exact:
//! a message sent in the window is expected at every member of its room, whenever it
//! arrives before the drain deadline.

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::tag::Tag;

/// The measured window on [`crate::tag::now_ns`]'s clock: `[start_ns, end_ns)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// First nanosecond of the window.
    pub start_ns: u64,
    /// First nanosecond after the window.
    pub end_ns: u64,
}

impl Window {
    /// Whether a send time falls in the window.
    pub fn contains(&self, ns: u64) -> bool {
        (self.start_ns..self.end_ns).contains(&ns)
    }

    /// The window's length in seconds.
    pub fn seconds(&self) -> f64 {
        self.end_ns.saturating_sub(self.start_ns) as f64 / 1e9
    }
}

/// A latency histogram in nanoseconds (1 ns .. 100 s, 3 significant digits).
#[derive(Debug, Clone)]
pub struct Latency {
    histogram: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

/// The summary of a [`Latency`], in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct Percentiles {
    /// Values recorded.
    pub count: u64,
    /// Median, µs.
    pub p50_us: f64,
    /// 90th percentile, µs.
    pub p90_us: f64,
    /// 99th percentile, µs.
    pub p99_us: f64,
    /// Largest value, µs.
    pub max_us: f64,
}

impl Latency {
    /// Largest value kept exactly; larger ones are clamped (a 100 s latency is a failure
    /// whatever its exact value).
    const MAX_NS: u64 = 100_000_000_000;

    /// An empty histogram.
    pub fn new() -> Self {
        // Constant bounds that hdrhistogram accepts (low ≥ 1, high ≥ 2 × low, sigfig ≤ 5):
        // this cannot fail at run time, and a unit test builds one.
        let histogram = Histogram::new_with_bounds(1, Self::MAX_NS, 3)
            .expect("constant histogram bounds are valid");
        Self { histogram }
    }

    /// Records one latency in nanoseconds (0 is kept as 1 ns; above 100 s is clamped).
    pub fn record_ns(&mut self, ns: u64) {
        let value = ns.clamp(1, Self::MAX_NS);
        // In range by the clamp, so `record` cannot fail; saturating keeps it total.
        self.histogram.saturating_record(value);
    }

    /// Adds another histogram's values.
    pub fn merge(&mut self, other: &Latency) {
        // Same bounds on both sides: `add` fails only on bounds it cannot hold.
        for value in other.histogram.iter_recorded() {
            self.histogram
                .saturating_record_n(value.value_iterated_to(), value.count_at_value());
        }
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// p50/p90/p99/max in microseconds; all zero when nothing was recorded.
    pub fn percentiles(&self) -> Percentiles {
        if self.histogram.is_empty() {
            return Percentiles::default();
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Percentiles {
            count: self.histogram.len(),
            p50_us: us(self.histogram.value_at_quantile(0.50)),
            p90_us: us(self.histogram.value_at_quantile(0.90)),
            p99_us: us(self.histogram.value_at_quantile(0.99)),
            max_us: us(self.histogram.max()),
        }
    }
}

/// Counters of one receiving client, or of a whole run once merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct DeliveryCounts {
    /// `message_received` frames carrying one of our tags, any time.
    pub received_total: u64,
    /// Of those, messages sent inside the measured window.
    pub received_in_window: u64,
    /// Messages skipped in a sender's counter sequence (lost or reordered past).
    pub gaps: u64,
    /// Messages whose counter was not above the last one seen from that sender.
    pub duplicates: u64,
    /// Skipped `seq` numbers, when the server sends `seq`.
    pub seq_gaps: u64,
    /// `seq` numbers not above the last one seen, when the server sends `seq`.
    pub seq_duplicates: u64,
    /// Frames whose `seq` was absent (the base protocol has none).
    pub without_seq: u64,
    /// `message_received` frames whose content was not a tag.
    pub foreign: u64,
    /// `error` frames received.
    pub errors: u64,
}

impl DeliveryCounts {
    /// Adds another client's counters.
    pub fn merge(&mut self, other: &DeliveryCounts) {
        self.received_total += other.received_total;
        self.received_in_window += other.received_in_window;
        self.gaps += other.gaps;
        self.duplicates += other.duplicates;
        self.seq_gaps += other.seq_gaps;
        self.seq_duplicates += other.seq_duplicates;
        self.without_seq += other.without_seq;
        self.foreign += other.foreign;
        self.errors += other.errors;
    }

    /// Whether one client's view is exact: `in_window` messages were sent to its room in
    /// the window and it received each once, with no gap, duplicate or reordering
    /// (`seq` going back counts as a duplicate, skipping ahead as a gap).
    pub fn is_exact(&self, in_window: u64) -> bool {
        self.received_in_window == in_window
            && self.gaps == 0
            && self.duplicates == 0
            && self.seq_gaps == 0
            && self.seq_duplicates == 0
    }
}

/// What one receiving client saw.
#[derive(Debug, Clone)]
pub struct DeliveryTracker {
    window: Window,
    /// Last counter seen per sender index (`None`: nothing yet).
    last_counter: Vec<Option<u64>>,
    /// Last `seq` seen (a client is in one room in every scenario).
    last_seq: Option<u64>,
    /// The counters.
    pub counts: DeliveryCounts,
    /// Latency of the messages sent in the window.
    pub latency: Latency,
}

impl DeliveryTracker {
    /// A tracker for a run with `senders` senders and the given window.
    pub fn new(senders: usize, window: Window) -> Self {
        Self {
            window,
            last_counter: vec![None; senders],
            last_seq: None,
            counts: DeliveryCounts::default(),
            latency: Latency::new(),
        }
    }

    /// Books one `message_received`; returns its tag when the content was one.
    ///
    /// Every client joins before any message is sent, so the first message from a sender
    /// must carry counter 0: anything else is a gap.
    pub fn on_message(&mut self, content: &str, seq: Option<u64>, now_ns: u64) -> Option<Tag> {
        match seq {
            Some(seq) => {
                match self.last_seq {
                    Some(last) if seq == last + 1 => {}
                    Some(last) if seq > last => self.counts.seq_gaps += seq - last - 1,
                    Some(_) => self.counts.seq_duplicates += 1,
                    // The room's seq does not start at a known value: the first one seen
                    // is the baseline.
                    None => {}
                }
                self.last_seq = Some(self.last_seq.map_or(seq, |last| last.max(seq)));
            }
            None => self.counts.without_seq += 1,
        }
        let Some(tag) = Tag::parse(content) else {
            self.counts.foreign += 1;
            return None;
        };
        self.counts.received_total += 1;
        let index = usize::try_from(tag.sender).unwrap_or(usize::MAX);
        if let Some(last) = self.last_counter.get_mut(index) {
            let next = last.map_or(0, |l| l + 1);
            if tag.counter > next {
                self.counts.gaps += tag.counter - next;
            }
            if tag.counter < next {
                self.counts.duplicates += 1;
            } else {
                *last = Some(tag.counter);
            }
        } else {
            // A sender index the run does not have: not one of this run's messages.
            self.counts.foreign += 1;
            self.counts.received_total -= 1;
            return None;
        }
        if self.window.contains(tag.sent_ns) {
            self.counts.received_in_window += 1;
            self.latency.record_ns(now_ns.saturating_sub(tag.sent_ns));
        }
        Some(tag)
    }

    /// Books one `error` frame.
    pub fn on_error(&mut self) {
        self.counts.errors += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Window = Window {
        start_ns: 1_000,
        end_ns: 2_000,
    };

    fn content(sender: u32, counter: u64, sent_ns: u64) -> String {
        Tag {
            sender,
            counter,
            sent_ns,
        }
        .encode()
    }

    #[test]
    fn an_in_order_stream_has_no_gaps_and_counts_only_the_window() {
        let mut t = DeliveryTracker::new(2, WINDOW);
        t.on_message(&content(0, 0, 500), None, 600); // warm-up
        t.on_message(&content(1, 0, 1_000), None, 1_100);
        t.on_message(&content(0, 1, 1_500), None, 1_700);
        t.on_message(&content(0, 2, 2_000), None, 2_100); // after the window
        assert_eq!(t.counts.received_total, 4);
        assert_eq!(t.counts.received_in_window, 2);
        assert_eq!(t.counts.gaps, 0);
        assert_eq!(t.counts.duplicates, 0);
        assert_eq!(t.counts.without_seq, 4);
        assert_eq!(t.latency.count(), 2);
    }

    #[test]
    fn skipped_counters_are_gaps_and_repeats_are_duplicates() {
        let mut t = DeliveryTracker::new(1, WINDOW);
        t.on_message(&content(0, 1, 1_100), None, 1_200); // 0 missing
        t.on_message(&content(0, 4, 1_200), None, 1_300); // 2, 3 missing
        t.on_message(&content(0, 4, 1_200), None, 1_300); // duplicate
        t.on_message(&content(0, 3, 1_200), None, 1_300); // late: counted as duplicate
        t.on_message(&content(0, 5, 1_300), None, 1_400);
        assert_eq!(t.counts.gaps, 3);
        assert_eq!(t.counts.duplicates, 2);
        assert_eq!(t.counts.received_total, 5);
    }

    #[test]
    fn a_view_is_exact_only_with_every_message_once_and_in_order() {
        let mut t = DeliveryTracker::new(2, WINDOW);
        t.on_message(&content(0, 0, 1_100), Some(7), 1_200);
        t.on_message(&content(1, 0, 1_150), Some(8), 1_250);
        assert!(t.counts.is_exact(2));
        assert!(!t.counts.is_exact(3), "one short");
        let mut reordered = t.clone();
        reordered.on_message(&content(0, 2, 1_300), Some(10), 1_400);
        reordered.on_message(&content(0, 1, 1_200), Some(9), 1_400);
        assert!(!reordered.counts.is_exact(4), "seq and counter went back");
        let mut duplicated = t.clone();
        duplicated.on_message(&content(1, 0, 1_150), Some(8), 1_400);
        assert!(!duplicated.counts.is_exact(2) && !duplicated.counts.is_exact(3));
    }

    #[test]
    fn seq_is_checked_when_present_from_the_first_one_seen() {
        let mut t = DeliveryTracker::new(1, WINDOW);
        t.on_message(&content(0, 0, 1_100), Some(41), 1_200);
        t.on_message(&content(0, 1, 1_100), Some(42), 1_200);
        t.on_message(&content(0, 2, 1_100), Some(45), 1_200);
        t.on_message(&content(0, 3, 1_100), Some(45), 1_200);
        assert_eq!(t.counts.seq_gaps, 2);
        assert_eq!(t.counts.seq_duplicates, 1);
        assert_eq!(t.counts.without_seq, 0);
    }

    #[test]
    fn foreign_contents_and_unknown_senders_are_not_deliveries() {
        let mut t = DeliveryTracker::new(1, WINDOW);
        assert_eq!(t.on_message("hello", None, 1_500), None);
        assert_eq!(t.on_message(&content(3, 0, 1_500), None, 1_600), None);
        assert_eq!(t.counts.foreign, 2);
        assert_eq!(t.counts.received_total, 0);
        assert_eq!(t.counts.received_in_window, 0);
    }

    #[test]
    fn latency_is_receipt_minus_send_time() {
        let mut t = DeliveryTracker::new(
            1,
            Window {
                start_ns: 0,
                end_ns: u64::MAX,
            },
        );
        for (i, latency_us) in (1..=100u64).enumerate() {
            let sent = 10_000 + i as u64;
            t.on_message(&content(0, i as u64, sent), None, sent + latency_us * 1_000);
        }
        let p = t.latency.percentiles();
        assert_eq!(p.count, 100);
        // 3 significant digits: within 0.1 %.
        assert!((p.p50_us - 50.0).abs() < 0.1, "{p:?}");
        assert!((p.p90_us - 90.0).abs() < 0.1, "{p:?}");
        assert!((p.p99_us - 99.0).abs() < 0.1, "{p:?}");
        assert!((p.max_us - 100.0).abs() < 0.1, "{p:?}");
    }

    #[test]
    fn merged_histograms_and_counts_add_up() {
        let mut a = DeliveryTracker::new(1, WINDOW);
        let mut b = DeliveryTracker::new(1, WINDOW);
        a.on_message(&content(0, 0, 1_000), None, 2_000); // 1 µs
        b.on_message(&content(0, 0, 1_000), None, 1_001_000); // 1 ms
        b.on_error();
        let mut latency = Latency::new();
        latency.merge(&a.latency);
        latency.merge(&b.latency);
        let mut counts = a.counts;
        counts.merge(&b.counts);
        assert_eq!(counts.received_in_window, 2);
        assert_eq!(counts.errors, 1);
        let p = latency.percentiles();
        assert_eq!(p.count, 2);
        assert!(p.p50_us <= 1.01, "{p:?}");
        assert!((p.max_us - 1000.0).abs() < 1.0, "{p:?}");
    }

    #[test]
    fn an_empty_histogram_reports_zeros() {
        assert_eq!(Latency::new().percentiles(), Percentiles::default());
    }

    #[test]
    fn the_window_is_half_open() {
        assert!(WINDOW.contains(1_000));
        assert!(WINDOW.contains(1_999));
        assert!(!WINDOW.contains(2_000));
        assert!(!WINDOW.contains(999));
        assert!((WINDOW.seconds() - 1e-6).abs() < 1e-12);
    }
}
