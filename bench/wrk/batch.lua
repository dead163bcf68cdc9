-- POST /v1/pos/batches: BENCH_BATCH purchases a request (an offline till's queue), each with
-- a fresh idempotency key and receipt, over random members of the sample.
package.path = os.getenv("BENCH_LUA") .. "/?.lua;" .. package.path
local common = require("common")
local members = common.load("members")
local key = os.getenv("BENCH_TERMINAL_KEY")
local run = os.getenv("BENCH_RUN")
local size = tonumber(os.getenv("BENCH_BATCH") or "100")
local occurred = os.date("!%Y-%m-%dT%H:%M:%SZ")

setup = common.setup
done = common.done

function init(args)
  common.init()
end

function request()
  local items = {}
  for i = 1, size do
    local current = common.next()
    local member = members[math.random(#members)]
    local total = math.random(300, 20000)
    items[i] = string.format(
      '{"kind":"purchase","idempotency_key":"%s-%s","purchase":{"member":{"id":"%s"},' ..
      '"receipt_id":"%s-%s","occurred_at":"%s","total":%d,"currency":"JPY",' ..
      '"lines":[{"sku":"SKU-%d","category":"food","quantity":1,"unit_price":%d}]}}',
      run, current, member, run, current, occurred, total, total % 50, total)
  end
  return wrk.format("POST", "/v1/pos/batches", {
    ["Authorization"] = "Bearer " .. key,
    ["Content-Type"] = "application/json",
  }, '{"items":[' .. table.concat(items, ",") .. ']}')
end
