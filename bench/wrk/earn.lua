-- POST /v1/pos/purchases with a fresh idempotency key and receipt each time, over random
-- members of the sample. BENCH_REPEAT=3 sends every key three times (the retry storm);
-- BENCH_DELAY_MS paces each connection (the latency scenario).
package.path = os.getenv("BENCH_LUA") .. "/?.lua;" .. package.path
local common = require("common")
local members = common.load("members")
local key = os.getenv("BENCH_TERMINAL_KEY")
local run = os.getenv("BENCH_RUN")
local repeat_each = tonumber(os.getenv("BENCH_REPEAT") or "1")
local pace = tonumber(os.getenv("BENCH_DELAY_MS") or "0")
local occurred = os.date("!%Y-%m-%dT%H:%M:%SZ")

setup = common.setup
done = common.done

local current, member, total, sent

function init(args)
  common.init()
  sent = repeat_each
end

function request()
  if sent >= repeat_each then
    current = common.next()
    member = members[math.random(#members)]
    total = math.random(300, 20000)
    sent = 0
  end
  sent = sent + 1
  local body = string.format(
    '{"member":{"id":"%s"},"receipt_id":"%s-%s","occurred_at":"%s","total":%d,' ..
    '"currency":"JPY","lines":[{"sku":"SKU-%d","category":"food","quantity":1,' ..
    '"unit_price":%d}]}', member, run, current, occurred, total, total % 50, total)
  return wrk.format("POST", "/v1/pos/purchases", {
    ["Authorization"] = "Bearer " .. key,
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = run .. "-" .. current,
  }, body)
end

if pace > 0 then
  function delay()
    return common.wait(pace)
  end
end
