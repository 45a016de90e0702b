-- A fixed request rate for plain wrk (which has no -R, unlike wrk2): each
-- connection waits TPB_WRK_DELAY_MS between requests, so with -c2 and 20 ms the
-- server sees at most about 100 requests/s per wrk instead of as many as it can
-- take, and the latency is that of a loaded but not saturated server.
local delay_ms = tonumber(os.getenv("TPB_WRK_DELAY_MS") or "20")

function delay()
  return delay_ms
end

-- One machine-readable line; latencies in microseconds.
function done(summary, latency, requests)
  io.write(string.format(
    "TPB requests=%d duration_us=%d p50_us=%d p90_us=%d p99_us=%d max_us=%d "
      .. "status_errors=%d connect_errors=%d read_errors=%d write_errors=%d timeouts=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, summary.errors.status, summary.errors.connect,
    summary.errors.read, summary.errors.write, summary.errors.timeout))
end
