"""What an SLO is now: its per-minute rollup, SLI, error budget, burn rates and burn-rate alerts.

Every closed minute of every SLO becomes one `SLIBucket` row holding that minute's good and total
units and the running totals since the SLO's first minute. The count over any window is then the
difference of two running totals, found by primary-key-like lookups, so the 28-day numbers of 50
SLOs cost a few index reads instead of a scan of millions of samples.

Units are events (Occurrences) or one-minute time slices (Timeslices, and every threshold SLI
read from Prometheus, which answers one number per minute).
"""

import calendar
import math
import operator
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import django.dispatch
from django.db import transaction
from django.db.models import Max, Sum
from django.db.models.functions import Trunc
from django.utils import timezone

from signals.measurements import duration_spec
from signals.models import SLO, Sample, SLIBucket, SLOAlert
from signals.prometheus import prometheus_range_points
from signals.selectors import (
    PERCENTILES,
    label_key_filter,
    percentile,
    samples_narrowed,
)
from signals.slo_spec import MetricRef

MINUTE = timedelta(minutes=1)
# A minute is rolled up once this long has passed after its end, so scrapes that arrive a little
# late still count. Samples older than that for a closed minute are not counted.
SETTLE = timedelta(seconds=20)
# Counter increases across a gap longer than this are not attributed to the minute after it.
COUNTER_LOOKBACK = timedelta(minutes=15)
CHUNK = timedelta(days=1)
BURN_WINDOWS = {"5m": 300, "30m": 1800, "1h": 3600, "6h": 21600, "3d": 259200}
SHORTEST_BURN_WINDOW = min(BURN_WINDOWS, key=BURN_WINDOWS.__getitem__)
_OPS: dict[str, Callable[[float, float], bool]] = {
    "lt": operator.lt,
    "lte": operator.le,
    "gt": operator.gt,
    "gte": operator.ge,
}

# Sent after `slo_refresh` with `slo_id`, `budget_before` and `budget_after` (remaining shares of
# the error budget, None without data) and `opened` (ids of the alerts it opened): apps above this
# one push what the move changes (a budget gate opening or closing) without polling.
slo_refreshed = django.dispatch.Signal()


@dataclass(frozen=True)
class AlertRule:
    """The SRE Workbook's multiwindow, multi-burn-rate alert: fires when both windows burn
    faster than the rate at which `budget_share` of the period's budget goes in `long` seconds."""

    severity: str
    long_seconds: int
    short_seconds: int
    budget_share: float

    def threshold(self, period_seconds: int) -> float:
        return self.budget_share * period_seconds / self.long_seconds

    @property
    def label(self) -> str:
        return f"{duration_spec(self.long_seconds)} and {duration_spec(self.short_seconds)}"


ALERT_RULES = (
    AlertRule(SLOAlert.Severity.PAGE, 3600, 300, 0.02),
    AlertRule(SLOAlert.Severity.PAGE, 21600, 1800, 0.05),
    AlertRule(SLOAlert.Severity.TICKET, 259200, 21600, 0.10),
)


@dataclass(frozen=True)
class WindowCount:
    """Good and total units over a window."""

    good: float
    total: float

    @property
    def bad(self) -> float:
        return max(self.total - self.good, 0.0)

    @property
    def ratio(self) -> float | None:
        return self.good / self.total if self.total > 0 else None


@dataclass
class SLOStatus:
    slo: SLO
    at: datetime | None
    window_start: datetime | None
    window: WindowCount
    burn_rates: dict[str, float | None]
    burn_totals: dict[str, float]
    open_alerts: list[SLOAlert] = field(default_factory=list)

    @property
    def has_data(self) -> bool:
        return self.window.total > 0

    @property
    def sli(self) -> float | None:
        return self.window.ratio

    @property
    def budget_total(self) -> float:
        """Bad units the window may hold."""
        return self.slo.error_budget * self.window.total

    @property
    def budget_consumed(self) -> float | None:
        """Share of the budget spent; above 1 when overspent. None without data."""
        if not self.has_data:
            return None
        return self.window.bad / self.budget_total

    @property
    def budget_remaining(self) -> float | None:
        consumed = self.budget_consumed
        return None if consumed is None else 1.0 - consumed

    @property
    def exhausted(self) -> bool:
        remaining = self.budget_remaining
        return remaining is not None and remaining <= 0

    @property
    def silent_for(self) -> str | None:
        """The shortest burn window ("5m") when the SLO has data but none in it: the source may
        be dead, and its open alerts stay open until data says otherwise. Else None."""
        silent = self.has_data and self.burn_rates[SHORTEST_BURN_WINDOW] is None
        return SHORTEST_BURN_WINDOW if silent else None

    @property
    def state(self) -> str:
        if not self.has_data:
            return "no data"
        if self.exhausted:
            return "exhausted"
        if any(a.severity == SLOAlert.Severity.PAGE for a in self.open_alerts):
            return "page"
        if self.open_alerts:
            return "ticket"
        return "ok"

    @property
    def worst_first(self) -> tuple:
        rank = {"exhausted": 0, "page": 1, "ticket": 2, "ok": 3, "no data": 4}[self.state]
        remaining = self.budget_remaining
        return (rank, remaining if remaining is not None else math.inf, self.slo.name)

    @property
    def fastest_burn(self) -> float | None:
        rates = [r for r in self.burn_rates.values() if r is not None]
        return max(rates) if rates else None


def window_start(slo: SLO, at: datetime) -> datetime:
    """Where the SLO's window begins for `at`: `at` minus the window, or the start of the current
    calendar period."""
    if slo.rolling:
        return at - timedelta(seconds=slo.window_seconds)
    tz = ZoneInfo(slo.calendar_timezone or "UTC")
    anchor = datetime.fromisoformat(slo.calendar_start).replace(tzinfo=tz)
    local = at.astimezone(tz)
    amount, unit = int(slo.window_text[:-1]), slo.window_text[-1]
    if unit == "M":

        def period_start(months: int) -> datetime:
            year = anchor.year + (anchor.month - 1 + months) // 12
            month = (anchor.month - 1 + months) % 12 + 1
            day = min(anchor.day, calendar.monthrange(year, month)[1])
            return anchor.replace(year=year, month=month, day=day)

        months = (local.year - anchor.year) * 12 + local.month - anchor.month
        months -= months % amount
        start = period_start(months)
        if start > local:  # earlier in the month than the anchor's day and time: the period before
            start = period_start(months - amount)
        return start.astimezone(UTC)
    length = timedelta(days=amount * (7 if unit == "w" else 1))
    periods = (local - anchor) // length
    return (anchor + periods * length).astimezone(UTC)


def _floor_minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


# ---------------------------------------------------------------- rollup


@dataclass
class _Minute:
    good: float = 0.0
    total: float = 0.0
    value: float | None = None
    p99: float | None = None
    p999: float | None = None


def _aggregate(values: list[float], aggregation: str) -> float:
    if aggregation in PERCENTILES:
        return percentile(sorted(values), PERCENTILES[aggregation])
    if aggregation == "avg":
        return math.fsum(values) / len(values)
    if aggregation == "min":
        return min(values)
    return max(values)


def _builtin_events(
    ref: MetricRef, *, counter: bool, start: datetime, end: datetime
) -> dict[datetime, float]:
    """Events per minute end in [start, end) of the matched series, aggregated in SQL per series
    and minute: a counter's increase (from each minute's last value), or the sum of the samples."""
    selected = label_key_filter(ref.matchers)
    since = start - COUNTER_LOOKBACK if counter else start
    rows = (
        samples_narrowed(
            Sample.objects.filter(name=ref.metric, timestamp__gte=since, timestamp__lt=end),
            ref.matchers,
        )
        .annotate(minute=Trunc("timestamp", "minute", tzinfo=UTC))
        .values("label_key", "minute")
        .annotate(last=Max("value"), total=Sum("value"))
        .order_by("label_key", "minute")
    )
    events: dict[datetime, float] = defaultdict(float)
    chosen: dict[str, bool] = {}
    previous: tuple[str, datetime, float] | None = None
    for row in rows:
        key, minute = row["label_key"], row["minute"]
        if key not in chosen:
            chosen[key] = selected(key)
        if not chosen[key]:
            continue
        minute_end = minute + MINUTE
        if not counter:
            events[minute_end] += row["total"]
            continue
        if previous and previous[0] == key and minute - previous[1] <= COUNTER_LOOKBACK:
            before = previous[2]
            # A drop is a counter reset: everything counted since the reset is new.
            increase = row["last"] - before if row["last"] >= before else row["last"]
            if minute_end > start:
                events[minute_end] += increase
        previous = (key, minute, row["last"])
    return events


def _builtin_threshold(
    slo: SLO, ref: MetricRef, *, start: datetime, end: datetime
) -> dict[datetime, _Minute]:
    """Each minute's threshold value, latency percentiles and (Occurrences) good/total samples."""
    check = _OPS[slo.threshold_op]
    selected = label_key_filter(ref.matchers)
    values: dict[datetime, list[float]] = defaultdict(list)
    chosen: dict[str, bool] = {}
    rows = samples_narrowed(
        Sample.objects.filter(name=ref.metric, timestamp__gte=start, timestamp__lt=end),
        ref.matchers,
    ).values_list("label_key", "timestamp", "value")
    for key, moment, value in rows.iterator(chunk_size=5_000):
        if key not in chosen:
            chosen[key] = selected(key)
        if chosen[key]:
            values[_floor_minute(moment) + MINUTE].append(value)
    minutes = {}
    for minute_end, seen in values.items():
        ordered = sorted(seen)
        good = sum(1 for v in seen if check(v, slo.threshold))
        value = _aggregate(seen, ref.aggregation or "p99")
        if slo.budgeting == SLO.Budgeting.OCCURRENCES:
            good_units, total_units = float(good), float(len(seen))
        elif slo.time_slice_target is not None:
            good_units, total_units = float(good / len(seen) >= slo.time_slice_target), 1.0
        else:
            good_units, total_units = float(check(value, slo.threshold)), 1.0
        minutes[minute_end] = _Minute(
            good_units, total_units, value, percentile(ordered, 99.0), percentile(ordered, 99.9)
        )
    return minutes


def _prometheus_points(
    slo: SLO, promql: str, *, start: datetime, end: datetime
) -> dict[datetime, float]:
    """Values at each minute end in (start, end] (end-inclusive evaluation of each closed minute)."""
    points = prometheus_range_points(
        source=slo.source, promql=promql, start=start + MINUTE, end=end, step_seconds=60
    )
    found: dict[datetime, float] = defaultdict(float)
    for unix, value in points:
        found[datetime.fromtimestamp(round(unix), tz=UTC)] += value
    return found


def _prometheus_events(
    slo: SLO, ref: MetricRef, *, counter: bool, start: datetime, end: datetime
) -> dict[datetime, float]:
    if counter:
        # A subquery, so a counter expression (not only a bare selector) can be increased.
        promql = f"sum(increase(({ref.query})[1m:15s]))"
        return _prometheus_points(slo, promql, start=start, end=end)
    # Not a counter: the query is a per-second event rate.
    rates = _prometheus_points(slo, f"sum({ref.query})", start=start, end=end)
    return {moment: rate * 60 for moment, rate in rates.items()}


def _ratio_minutes(slo: SLO, *, start: datetime, end: datetime) -> dict[datetime, _Minute]:
    indicator = slo.indicator
    counter = indicator.get("counter", True)
    refs = {
        k: MetricRef.from_dict(indicator[k]) for k in ("good", "bad", "total") if indicator.get(k)
    }
    if slo.source is None:
        read = {
            k: _builtin_events(ref, counter=counter, start=start, end=end)
            for k, ref in refs.items()
        }
    else:
        read = {
            k: _prometheus_events(slo, ref, counter=counter, start=start, end=end)
            for k, ref in refs.items()
        }
    minutes: dict[datetime, _Minute] = {}
    for minute_end, total in read["total"].items():
        if "good" in read:
            good = min(read["good"].get(minute_end, 0.0), total)
        else:
            good = max(total - read["bad"].get(minute_end, 0.0), 0.0)
        if total <= 0:
            continue
        if slo.budgeting == SLO.Budgeting.TIMESLICES:
            minutes[minute_end] = _Minute(
                float(good / total >= (slo.time_slice_target or 1.0)), 1.0
            )
        else:
            minutes[minute_end] = _Minute(good, total)
    return minutes


def _threshold_minutes(slo: SLO, *, start: datetime, end: datetime) -> dict[datetime, _Minute]:
    ref = MetricRef.from_dict(slo.indicator["metric"])
    if slo.source is None:
        return _builtin_threshold(slo, ref, start=start, end=end)
    check = _OPS[slo.threshold_op]
    return {
        moment: _Minute(float(check(value, slo.threshold)), 1.0, value)
        for moment, value in _prometheus_points(slo, ref.query, start=start, end=end).items()
    }


def _rollup_start(slo: SLO, closed: datetime) -> datetime:
    """Where a new SLO's rollup begins: the window back, or (built-in store) its first sample."""
    start = _floor_minute(window_start(slo, closed))
    if slo.source is None:
        names = [
            ref["metric"]
            for k in ("good", "bad", "total", "metric")
            if (ref := slo.indicator.get(k))
        ]
        first = (
            Sample.objects.filter(name__in=names, timestamp__gte=start)
            .order_by("timestamp")
            .values_list("timestamp", flat=True)
            .first()
        )
        start = max(start, _floor_minute(first)) if first else closed
    return start


def slo_rollup(*, slo_id: int, now: datetime | None = None) -> int:
    """Roll up every closed minute not yet rolled up, a day per transaction. Returns minutes
    written. Raises PrometheusError when the source fails (nothing of that chunk is written)."""
    now = now or timezone.now()
    closed = _floor_minute(now - SETTLE)
    written = 0
    while True:
        with transaction.atomic():
            slo = (
                SLO.objects.select_for_update(of=("self",)).select_related("source").get(pk=slo_id)
            )
            start = slo.rolled_up_to or _rollup_start(slo, closed)
            if start >= closed:
                return written
            end = min(start + CHUNK, closed)
            written += _rollup_chunk(slo, start, end)
            slo.rolled_up_from = slo.rolled_up_from or start
            slo.rolled_up_to = end
            slo.save(update_fields=["rolled_up_from", "rolled_up_to"])


def _rollup_chunk(slo: SLO, start: datetime, end: datetime) -> int:
    reader = _ratio_minutes if slo.kind == SLO.Kind.RATIO else _threshold_minutes
    minutes = reader(slo, start=start, end=end)
    last = slo.buckets.order_by("-end").values_list("cum_good", "cum_total").first() or (0.0, 0.0)
    cum_good, cum_total = last
    rows = []
    moment = start + MINUTE
    while moment <= end:
        # Every minute gets a row, with data or not, so running totals are continuous and a
        # window's start is an exact lookup.
        minute = minutes.get(moment, _Minute())
        cum_good += minute.good
        cum_total += minute.total
        rows.append(
            SLIBucket(
                slo=slo,
                end=moment,
                good=minute.good,
                total=minute.total,
                cum_good=cum_good,
                cum_total=cum_total,
                value=minute.value,
                p99=minute.p99,
                p999=minute.p999,
            )
        )
        moment += MINUTE
    SLIBucket.objects.bulk_create(rows, batch_size=2_000)
    return len(rows)


# ---------------------------------------------------------------- status


def _cumulative(
    pairs: Iterable[tuple[int, datetime]],
) -> dict[tuple[int, datetime], tuple[float, float]]:
    """Running totals at each (slo id, minute end); one query."""
    wanted = list(pairs)
    if not wanted:
        return {}
    ids = {slo_id for slo_id, _ in wanted}
    ends = {end for _, end in wanted}
    rows = SLIBucket.objects.filter(slo_id__in=ids, end__in=ends).values_list(
        "slo_id", "end", "cum_good", "cum_total"
    )
    return {(slo_id, end): (good, total) for slo_id, end, good, total in rows}


def slo_statuses(slos: Iterable[SLO]) -> list[SLOStatus]:
    """The window, budget and burn rates of each SLO, as of its last rolled-up minute: one query
    for the running totals of all of them and one for their open alerts."""
    slos = list(slos)
    boundaries: dict[int, dict[str, datetime]] = {}
    for slo in slos:
        if slo.rolled_up_to is None:
            continue
        at = slo.rolled_up_to
        marks = {"at": at, "window": _floor_minute(window_start(slo, at))}
        marks |= {label: at - timedelta(seconds=seconds) for label, seconds in BURN_WINDOWS.items()}
        boundaries[slo.pk] = marks
    found = _cumulative(
        (slo_id, end) for slo_id, marks in boundaries.items() for end in marks.values()
    )
    alerts: dict[int, list[SLOAlert]] = defaultdict(list)
    for alert in SLOAlert.objects.filter(slo__in=slos, resolved_at__isnull=True):
        alerts[alert.slo_id].append(alert)

    return [_status(slo, boundaries.get(slo.pk), found, alerts[slo.pk]) for slo in slos]


def _status(
    slo: SLO,
    marks: dict[str, datetime] | None,
    found: dict[tuple[int, datetime], tuple[float, float]],
    alerts: list[SLOAlert],
) -> SLOStatus:
    if marks is None:
        nothing = dict.fromkeys(BURN_WINDOWS, 0.0)
        return SLOStatus(
            slo, None, None, WindowCount(0, 0), dict.fromkeys(BURN_WINDOWS), nothing, alerts
        )
    # Before the first bucket the running totals are 0: buckets are never pruned.
    now_good, now_total = found.get((slo.pk, marks["at"]), (0.0, 0.0))
    counts = {}
    for label, moment in marks.items():
        good, total = found.get((slo.pk, moment), (0.0, 0.0))
        counts[label] = WindowCount(now_good - good, now_total - total)
    burn = {
        label: None if counts[label].ratio is None else (1 - counts[label].ratio) / slo.error_budget
        for label in BURN_WINDOWS
    }
    totals = {label: counts[label].total for label in BURN_WINDOWS}
    return SLOStatus(slo, marks["at"], marks["window"], counts["window"], burn, totals, alerts)


def slo_status(slo: SLO) -> SLOStatus:
    return slo_statuses([slo])[0]


# ---------------------------------------------------------------- alerts


def slo_alerts_evaluate(*, slo_id: int) -> list[SLOAlert]:
    """Open each rule's alert when both its windows burn above the threshold (with enough events
    in the long window), resolve it when they no longer do. Returns the alerts opened."""
    return _alerts_evaluate(slo_id)[0]


@transaction.atomic
def _alerts_evaluate(slo_id: int) -> tuple[list[SLOAlert], SLOStatus | None]:
    """`slo_alerts_evaluate`, also returning the status it judged (None before any rollup), so
    a refresh reads the budget once."""
    slo = SLO.objects.select_for_update().get(pk=slo_id)
    if slo.rolled_up_to is None:
        return [], None
    at = slo.rolled_up_to
    status = slo_status(slo)
    opened = []
    open_by_rule = {a.long_window_seconds: a for a in status.open_alerts}
    for rule in ALERT_RULES:
        threshold = rule.threshold(slo.window_seconds)
        long_label, short_label = (
            duration_spec(rule.long_seconds),
            duration_spec(rule.short_seconds),
        )
        long_rate, long_total = status.burn_rates[long_label], status.burn_totals[long_label]
        short_rate = status.burn_rates[short_label]
        firing = (
            long_rate is not None
            and short_rate is not None
            and long_total >= slo.alert_min_events
            and long_rate > threshold
            and short_rate > threshold
        )
        current = open_by_rule.get(rule.long_seconds)
        if firing and current is None:
            alert = SLOAlert.objects.create(
                slo=slo,
                severity=rule.severity,
                long_window_seconds=rule.long_seconds,
                short_window_seconds=rule.short_seconds,
                burn_rate_threshold=threshold,
                long_burn_rate=long_rate,
                short_burn_rate=short_rate,
                peak_burn_rate=max(long_rate, short_rate),
                opened_at=at,
            )
            opened.append(alert)
        elif firing and current is not None:
            peak = max(current.peak_burn_rate, long_rate, short_rate)
            if peak > current.peak_burn_rate:
                current.peak_burn_rate = peak
                current.save(update_fields=["peak_burn_rate"])
        elif not firing and current is not None and short_rate is not None:
            # Only data resolves a page: a dead exporter must not silence one.
            current.resolved_at = at
            current.save(update_fields=["resolved_at"])
    return opened, status


def slo_alerts_describe(slo: SLO) -> list[dict]:
    """Each rule with its threshold for this SLO's period (for the SLO page and charts)."""
    return [
        {
            "severity": rule.severity,
            "label": rule.label,
            "long": duration_spec(rule.long_seconds),
            "short": duration_spec(rule.short_seconds),
            "threshold": rule.threshold(slo.window_seconds),
            "budget_share": rule.budget_share,
        }
        for rule in ALERT_RULES
    ]


def slo_refresh(*, slo_id: int, now: datetime | None = None) -> list[SLOAlert]:
    """Roll up the closed minutes, evaluate the burn-rate alerts, then send `slo_refreshed` with
    how the remaining budget moved. Returns the alerts opened."""
    before = slo_status(SLO.objects.get(pk=slo_id)).budget_remaining
    slo_rollup(slo_id=slo_id, now=now)
    opened, status = _alerts_evaluate(slo_id)
    after = status.budget_remaining if status else None
    slo_refreshed.send(
        sender=SLO,
        slo_id=slo_id,
        budget_before=before,
        budget_after=after,
        opened=[alert.pk for alert in opened],
    )
    return opened
