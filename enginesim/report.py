"""The outcome of a run: counts, bytes, latency per call, and everything that went wrong."""

from dataclasses import asdict, dataclass, field


def percentile(values, fraction):
    """Nearest-rank percentile (no interpolation: every figure is a real call's time)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, -(-int(round(fraction * 1000)) * len(ordered) // 1000))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass
class RunReport:
    scenario: str
    engines: int
    rounds: int
    seconds: float
    keys_checked: int = 0
    hits: int = 0
    expected_hits: int = 0
    misses: int = 0
    unexpected_hits: int = 0
    records_posted: int = 0
    exported_records: int = 0
    layers_uploaded: int = 0
    layers_skipped: int = 0
    layers_downloaded: int = 0
    range_reopens: int = 0
    mounts_uploaded: int = 0
    mounts_downloaded: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    requests: int = 0
    failed_requests: int = 0
    calls: dict = field(default_factory=dict)  # endpoint -> {count, p50_ms, p99_ms, max_ms}
    wrong_hits: list = field(default_factory=list)
    violations: list = field(default_factory=list)
    miss_examples: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    @property
    def ok(self):
        return not self.wrong_hits and not self.violations

    @classmethod
    def collect(cls, options, engines, log, seconds, run_misses=(), run_failures=()):
        report = cls(options.scenario, len(engines), options.rounds, round(seconds, 3))
        for engine in engines:
            s = engine.stats
            for name in ("keys_checked", "hits", "expected_hits", "misses", "unexpected_hits", "records_posted",
                         "exported_records", "layers_uploaded", "layers_skipped", "layers_downloaded",
                         "range_reopens", "mounts_uploaded", "mounts_downloaded"):
                setattr(report, name, getattr(report, name) + getattr(s, name))
            report.wrong_hits += s.wrong_hits
            report.violations += s.violations
            report.miss_examples += [f"{engine.name}: {m}" for m in s.miss_examples]
            report.notes += s.notes
        report.misses += len(run_misses)
        report.miss_examples += list(run_misses)
        report.violations += list(run_failures)
        report.notes = sorted(set(report.notes))[:50]
        report.bytes_up, report.bytes_down = log.bytes_up, log.bytes_down
        report.failed_requests = log.errors
        for name, times in sorted(log.latencies.items()):
            report.requests += len(times)
            report.calls[name] = {
                "count": len(times),
                "p50_ms": round(percentile(times, 0.50) * 1000, 2),
                "p99_ms": round(percentile(times, 0.99) * 1000, 2),
                "max_ms": round(max(times) * 1000, 2),
            }
        return report

    def as_dict(self):
        data = asdict(self)
        data["ok"] = self.ok
        return data

    def lines(self):
        out = [
            f"scenario {self.scenario}: {self.engines} engine(s), {self.rounds} round(s), {self.seconds:.1f}s, "
            f"{self.requests} requests ({self.failed_requests} failed)",
            f"import: {self.keys_checked} keys checked, {self.hits} hits "
            f"({self.expected_hits} expected, {self.misses} missed, {self.unexpected_hits} more from earlier runs or concurrent exports), "
            f"{len(self.wrong_hits)} wrong hits",
            f"export: {self.records_posted} keys posted, {self.exported_records} records exported, "
            f"{self.layers_uploaded} layers uploaded, {self.layers_skipped} skipped as present",
            f"download: {self.layers_downloaded} layers verified, {self.range_reopens} Range re-opens; "
            f"cache mounts {self.mounts_uploaded} up, {self.mounts_downloaded} down",
            f"bytes: {_size(self.bytes_up)} up, {_size(self.bytes_down)} down",
            f"{'call':<22}{'count':>7}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}",
        ]
        for name, c in self.calls.items():
            out.append(f"{name:<22}{c['count']:>7}{c['p50_ms']:>10.1f}{c['p99_ms']:>10.1f}{c['max_ms']:>10.1f}")
        for title, items in (("WRONG HIT", self.wrong_hits), ("VIOLATION", self.violations),
                             ("miss", self.miss_examples[:20]), ("note", self.notes[:20])):
            out += [f"{title}: {item}" for item in items]
        out.append("OK" if self.ok else "FAILED: protocol violations or wrong hits (see above)")
        return out


def _size(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
