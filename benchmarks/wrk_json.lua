-- wrk reporter: one JSON line with wrk's own latency histogram percentiles (microseconds) and
-- its error counts, so nothing is parsed from the human-readable summary.
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\nWRK_JSON {"requests": %.0f, "duration_us": %.0f, "bytes": %.0f, "connect_errors": %.0f, ' ..
    '"read_errors": %.0f, "write_errors": %.0f, "status_errors": %.0f, "timeouts": %.0f, ' ..
    '"mean_us": %.1f, "stdev_us": %.1f, "max_us": %.0f, "p50_us": %.0f, "p90_us": %.0f, ' ..
    '"p99_us": %.0f, "p999_us": %.0f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency.mean, latency.stdev, latency.max, latency:percentile(50),
    latency:percentile(90), latency:percentile(99), latency:percentile(99.9)))
end
