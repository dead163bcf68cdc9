-- GET a path (BENCH_PATH, default /v1/me/points) as random members of the sample, each
-- request with that member's access token; BENCH_TOKENS=0 sends none (the framework's own
-- ceiling on /health/live), BENCH_DELAY_MS paces each connection.
package.path = os.getenv("BENCH_LUA") .. "/?.lua;" .. package.path
local common = require("common")
local path = os.getenv("BENCH_PATH") or "/v1/me/points"
local with_tokens = os.getenv("BENCH_TOKENS") ~= "0"
local pace = tonumber(os.getenv("BENCH_DELAY_MS") or "0")
local tokens = with_tokens and common.load("tokens") or {}

setup = common.setup
done = common.done
init = function(args) common.init() end

function request()
  if with_tokens then
    return wrk.format("GET", path, {["Authorization"] = "Bearer " .. tokens[math.random(#tokens)]})
  end
  return wrk.format("GET", path)
end

if pace > 0 then
  function delay()
    return common.wait(pace)
  end
end
