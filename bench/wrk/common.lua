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

-- The wait before a connection's next request, for a mean of ``pace`` ms: drawn from the
-- exponential distribution when BENCH_PACING is "poisson" (each connection's requests, and so
-- all of them together, arrive as a Poisson stream, as independent tills' do), else ``pace``
-- exactly (connections that started together stay in step and arrive in bursts).
local poisson = os.getenv("BENCH_PACING") == "poisson"

function common.wait(pace)
  if poisson then
    return math.floor(-pace * math.log(1 - math.random()) + 0.5)
  end
  return pace
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
