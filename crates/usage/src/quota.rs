//! Quota counting: each tenant's billable usage per quota period, summed by the aggregator with
//! the rollups (exactly once per batch, in the same transaction) and published to the api nodes
//! ([`TotalsSink`]: in-process in `resizer dev`), and each api node's [`QuotaBoard`], which adds
//! to the last published total what the node has answered since, so that a request is decided
//! in memory, without a network call.
//!
//! A period is a fixed window: the UTC calendar month (`period_s` 0, summed for every tenant),
//! or windows of `period_s` seconds counted from the Unix epoch (summed for the tenants the
//! aggregator is told have one). The board knows nothing of limits: the api compares.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::calendar::month_bounds;
use crate::record::UsageRecord;

/// `period_s` of the calendar month.
pub const MONTH: u32 = 0;

/// The window of `period_s` holding `time_ms`: its start and end (exclusive), in ms.
pub fn period_window(period_s: u32, time_ms: i64) -> (i64, i64) {
    if period_s == MONTH {
        return month_bounds(time_ms);
    }
    let len = i64::from(period_s) * 1000;
    let start = time_ms.div_euclid(len) * len;
    (start, start.saturating_add(len))
}

/// Billable usage in the quota's dimensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Used {
    pub requests: u64,
    pub input_bytes: u64,
    pub output_pixels: u64,
    pub cpu_us: u64,
}

impl Used {
    /// What a record adds: a billable request (answered 200) its amounts, any other nothing
    /// (docs/usage.md, billing rules).
    pub fn of(record: &UsageRecord) -> Used {
        if record.status != 200 {
            return Used::default();
        }
        Used {
            requests: 1,
            input_bytes: record.input_bytes,
            output_pixels: record.output_pixels(),
            cpu_us: record.cpu_us,
        }
    }

    /// Saturating, as the rollups: a sum must never wrap.
    pub fn add(&mut self, other: &Used) {
        self.requests = self.requests.saturating_add(other.requests);
        self.input_bytes = self.input_bytes.saturating_add(other.input_bytes);
        self.output_pixels = self.output_pixels.saturating_add(other.output_pixels);
        self.cpu_us = self.cpu_us.saturating_add(other.cpu_us);
    }

    fn sub(&mut self, other: &Used) {
        self.requests = self.requests.saturating_sub(other.requests);
        self.input_bytes = self.input_bytes.saturating_sub(other.input_bytes);
        self.output_pixels = self.output_pixels.saturating_sub(other.output_pixels);
        self.cpu_us = self.cpu_us.saturating_sub(other.cpu_us);
    }
}

/// A tenant's billable usage in one window of one period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeriodTotals {
    pub period_s: u32,
    pub start_ms: i64,
    pub end_ms: i64,
    pub used: Used,
}

/// What the aggregator publishes for a tenant: its totals in the current window of each period
/// it has, and for each api node the time of that node's latest billable record they include —
/// the node counts its own answers after it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TenantTotals {
    pub tenant: u64,
    pub periods: Vec<PeriodTotals>,
    pub marks: BTreeMap<String, i64>,
}

/// The usage-stream message header by which a cluster api node tells the aggregators the
/// rolling quota periods of the tenants in a batch (`<tenant>=<seconds>,...`): the aggregators
/// know no tenant's quota. A hint for the quota sums only: a wrong one shifts a tenant's rolling
/// sums, never what is billed.
pub const QUOTA_PERIODS_HEADER: &str = "Resizer-Quota-Periods";

/// The header's value for `periods` (tenant → seconds; 0s left out); None when there are none.
pub fn rolling_periods_header(periods: &BTreeMap<u64, u32>) -> Option<String> {
    let parts: Vec<String> = periods.iter().filter(|(_, &s)| s != MONTH).map(|(t, s)| format!("{t}={s}")).collect();
    (!parts.is_empty()).then(|| parts.join(","))
}

/// The header's periods; a malformed part is left out (that tenant is summed per month only).
pub fn parse_rolling_periods(value: &str) -> BTreeMap<u64, u32> {
    value
        .split(',')
        .filter_map(|part| {
            let (tenant, seconds) = part.split_once('=')?;
            Some((tenant.trim().parse().ok()?, seconds.trim().parse().ok()?))
        })
        .collect()
}

/// Where an aggregator publishes the totals after each applied batch: the api's board in the
/// same process (`resizer dev`), or the cluster's totals bucket.
pub trait TotalsSink: Send + Sync {
    fn publish(&self, totals: Vec<TenantTotals>);
}

/// A batch's sums for the quota tables: per (tenant, period_s, window start) the window's end
/// and the billable usage, and per (tenant, node) the latest time of a billable record.
/// `rolling_period` says which tenants have a rolling period (0: none).
pub(crate) type WindowSums = BTreeMap<(u64, u32, i64), (i64, Used)>;
pub(crate) type NodeMarks = BTreeMap<(u64, String), i64>;

pub(crate) fn batch_sums(records: &[UsageRecord], rolling_period: &dyn Fn(u64) -> u32) -> (WindowSums, NodeMarks) {
    let mut sums = WindowSums::new();
    let mut marks = NodeMarks::new();
    let mut periods: BTreeMap<u64, u32> = BTreeMap::new();
    for r in records.iter().filter(|r| r.status == 200) {
        let used = Used::of(r);
        let rolling = *periods.entry(r.tenant).or_insert_with(|| rolling_period(r.tenant));
        let periods: &[u32] = if rolling == MONTH { &[MONTH] } else { &[MONTH, rolling] };
        for &period_s in periods {
            let (start, end) = period_window(period_s, r.time_ms);
            sums.entry((r.tenant, period_s, start)).or_insert((end, Used::default())).1.add(&used);
        }
        let mark = marks.entry((r.tenant, r.node.to_string())).or_insert(i64::MIN);
        *mark = (*mark).max(r.time_ms);
    }
    (sums, marks)
}

/// An api node's view of each tenant's quota usage: the last totals published and what this
/// node has answered since. One lock for all tenants, taken twice per request of a tenant with
/// a quota (admission, answer) and never for one without.
pub struct QuotaBoard {
    node: String,
    tenants: Mutex<HashMap<u64, Board>>,
}

#[derive(Default)]
struct Board {
    /// The latest published window of each period, by `period_s`.
    published: HashMap<u32, PeriodTotals>,
    /// The time of this node's latest billable answer the published totals include.
    mark: Option<i64>,
    /// This node's billable answers not yet in the published totals, oldest first: (the latest
    /// answer's time, their sum). Answers close in time share an entry when there are many.
    local: VecDeque<(i64, Used)>,
    /// The sum of `local`.
    local_sum: Used,
    /// Admitted requests not yet answered: counted as requests already, so that requests
    /// admitted at once cannot all pass the last place.
    in_flight: u64,
}

/// Entries of a tenant's local answers past which answers within a second share one (within n
/// seconds past n times as many): an aggregator outage leaves the board small, at the price of
/// counting part of an entry twice for a moment (refusing early, never late).
const LOCAL_ENTRIES_FINE: usize = 4096;

/// What a quota decision saw: the usage in the current window and the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub used: Used,
    pub start_ms: i64,
    pub end_ms: i64,
}

impl QuotaBoard {
    /// `node`: this api node's id in usage records.
    pub fn new(node: &str) -> QuotaBoard {
        QuotaBoard { node: node.to_owned(), tenants: Mutex::new(HashMap::new()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Board>> {
        self.tenants.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The tenant's usage in the window of `period_s` holding `now_ms`, requests in flight
    /// included; if `admit` accepts it, one more request in flight (give it back with
    /// [`QuotaBoard::finish`]).
    pub fn admit<E>(
        &self,
        tenant: u64,
        period_s: u32,
        now_ms: i64,
        admit: impl FnOnce(&Usage) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut tenants = self.lock();
        let board = tenants.entry(tenant).or_default();
        let usage = board.usage(period_s, now_ms);
        admit(&usage)?;
        board.in_flight += 1;
        Ok(())
    }

    /// The tenant's usage in the window of `period_s` holding `now_ms` (for reports).
    pub fn usage(&self, tenant: u64, period_s: u32, now_ms: i64) -> Usage {
        let mut tenants = self.lock();
        match tenants.get_mut(&tenant) {
            Some(board) => board.usage(period_s, now_ms),
            None => {
                let (start_ms, end_ms) = period_window(period_s, now_ms);
                Usage { used: Used::default(), start_ms, end_ms }
            }
        }
    }

    /// An admitted request is done: out of flight, and its billable usage (answered at
    /// `time_ms`, the time in its record) counted until a published total includes it.
    pub fn finish(&self, tenant: u64, answered: Option<(i64, Used)>) {
        let mut tenants = self.lock();
        let board = tenants.entry(tenant).or_default();
        board.in_flight = board.in_flight.saturating_sub(1);
        if let Some((time_ms, used)) = answered {
            if board.mark.is_some_and(|mark| time_ms <= mark) {
                return;
            }
            board.local_sum.add(&used);
            let merge = match board.local.back() {
                // Concurrent answers finish slightly out of time order: into the latest entry.
                Some(&(latest, _)) if time_ms <= latest => true,
                // Past the fine count, one entry per second, per two seconds past twice it, ...
                Some(&(latest, _)) => {
                    let coarse = (board.local.len() / LOCAL_ENTRIES_FINE) as i64;
                    coarse > 0 && time_ms - latest < 1000 * coarse
                }
                None => false,
            };
            match board.local.back_mut() {
                Some(back) if merge => {
                    back.0 = back.0.max(time_ms);
                    back.1.add(&used);
                }
                _ => board.local.push_back((time_ms, used)),
            }
        }
    }

    /// Tenants the board has heard of, for reports.
    pub fn tenants(&self) -> Vec<u64> {
        self.lock().keys().copied().collect()
    }
}

impl TotalsSink for QuotaBoard {
    fn publish(&self, totals: Vec<TenantTotals>) {
        let mut tenants = self.lock();
        for t in totals {
            let board = tenants.entry(t.tenant).or_default();
            for p in t.periods {
                // A later window, or the same one grown: totals only grow within a window.
                let newer = board.published.get(&p.period_s).is_none_or(|old| {
                    p.start_ms > old.start_ms || (p.start_ms == old.start_ms && p.used.requests >= old.used.requests)
                });
                if newer {
                    board.published.insert(p.period_s, p);
                }
            }
            if let Some(&mark) = t.marks.get(&self.node) {
                board.mark = Some(board.mark.map_or(mark, |m| m.max(mark)));
                while let Some(&(time, used)) = board.local.front() {
                    if time > mark {
                        break;
                    }
                    board.local_sum.sub(&used);
                    board.local.pop_front();
                }
            }
        }
    }
}

impl Board {
    fn usage(&mut self, period_s: u32, now_ms: i64) -> Usage {
        let (start_ms, end_ms) = period_window(period_s, now_ms);
        // Answers of an earlier window count no more.
        while let Some(&(time, used)) = self.local.front() {
            if time >= start_ms {
                break;
            }
            self.local_sum.sub(&used);
            self.local.pop_front();
        }
        let mut used = match self.published.get(&period_s) {
            Some(p) if p.start_ms == start_ms => p.used,
            _ => Used::default(),
        };
        used.add(&self.local_sum);
        used.requests = used.requests.saturating_add(self.in_flight);
        Usage { used, start_ms, end_ms }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(requests: u64, bytes: u64) -> Used {
        Used { requests, input_bytes: bytes, output_pixels: 0, cpu_us: 0 }
    }

    #[test]
    fn windows_are_calendar_months_or_epoch_aligned() {
        // 2024-02-29T12:00:00Z
        let t = 1_709_208_000_000;
        assert_eq!(period_window(MONTH, t), (1_706_745_600_000, 1_709_251_200_000));
        assert_eq!(period_window(60, 61_500), (60_000, 120_000));
        assert_eq!(period_window(86_400, t).0 % 86_400_000, 0);
        // December rolls over into the next year.
        let dec = 1_735_000_000_000; // 2024-12-24
        assert_eq!(period_window(MONTH, dec), (1_733_011_200_000, 1_735_689_600_000));
    }

    #[test]
    fn the_board_adds_own_answers_after_the_mark_to_the_published_total() {
        let board = QuotaBoard::new("api-0");
        let now = 1_000_000;
        let ok = |_: &Usage| Ok::<(), ()>(());
        board.admit(7, 60, now, ok).expect("admitted");
        assert_eq!(board.usage(7, 60, now).used.requests, 1, "in flight counts");
        board.finish(7, Some((now, one(1, 10))));
        board.admit(7, 60, now + 1, ok).expect("admitted");
        board.finish(7, Some((now + 1, one(1, 10))));
        assert_eq!(board.usage(7, 60, now + 2).used, one(2, 20));
        // The aggregator has applied the first answer, and another node's 5.
        let (start_ms, end_ms) = period_window(60, now);
        board.publish(vec![TenantTotals {
            tenant: 7,
            periods: vec![PeriodTotals { period_s: 60, start_ms, end_ms, used: one(6, 60) }],
            marks: BTreeMap::from([("api-0".to_string(), now), ("api-1".to_string(), now + 50)]),
        }]);
        assert_eq!(board.usage(7, 60, now + 2).used, one(7, 70));
        // A refusal leaves nothing in flight.
        assert_eq!(
            board.admit(7, 60, now + 3, |u: &Usage| if u.used.requests >= 7 { Err(()) } else { Ok(()) }),
            Err(())
        );
        assert_eq!(board.usage(7, 60, now + 3).used.requests, 7);
        // The next window opens empty.
        assert_eq!(board.usage(7, 60, end_ms).used, Used::default());
    }

    #[test]
    fn a_batch_sums_billable_records_per_window_and_marks_each_node() {
        let record = |node: &str, time_ms: i64, status: u16| UsageRecord {
            tenant: 1,
            node: node.into(),
            time_ms,
            status,
            input_bytes: 100,
            output_width: 10,
            output_height: 10,
            ..UsageRecord::default()
        };
        let records =
            [record("a", 1_000, 200), record("a", 61_000, 200), record("b", 2_000, 200), record("a", 70_000, 429)];
        let (sums, marks) = batch_sums(&records, &|_| 60);
        assert_eq!(sums[&(1, 60, 0)].1, Used { requests: 2, input_bytes: 200, output_pixels: 200, cpu_us: 0 });
        assert_eq!(sums[&(1, 60, 60_000)].1.requests, 1);
        assert_eq!(sums[&(1, MONTH, 0)].1.requests, 3);
        assert_eq!((marks[&(1, "a".into())], marks[&(1, "b".into())]), (61_000, 2_000));
        let (month_only, _) = batch_sums(&records, &|_| 0);
        assert_eq!(month_only.len(), 1);
    }
}
