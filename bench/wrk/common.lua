-- Shared by the scenarios: per-thread ids, a random member from the sample, and a summary
-- printed as one JSON line that bench/run.py reads back.
local common = {}

local threads = {}
local counter = 0

function common.setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

function common.init()
  math.randomseed(os.time() * 1000 + id)
  counter = 0
end

function common.next()
  counter = counter + 1
  return id .. "-" .. counter, counter
end

function common.load(name)
  return dofile(os.getenv("BENCH_WORK") .. "/" .. name .. ".lua")
end

function common.done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "bytes": %d, "connect_errors": %d, ' ..
    '"read_errors": %d, "write_errors": %d, "status_errors": %d, "timeouts": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end

return common
