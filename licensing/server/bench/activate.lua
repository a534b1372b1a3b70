-- wrk script: every request activates one product-line serial from a new device
-- (a random fingerprint), so each one is a full activation: check, claim a slot,
-- insert, sign, commit. Set SERIAL and PACKAGE in the environment.
--   SERIAL=XXXX-... PACKAGE=com.acme.app wrk -t2 -c16 -d20s --latency \
--     -s licensing/server/bench/activate.lua http://127.0.0.1:8080
local serial = os.getenv("SERIAL")
local package = os.getenv("PACKAGE") or "com.acme.app"
local counter = 0

local function hex(n)
  local t = {}
  for i = 1, n do t[i] = string.format("%x", math.random(0, 15)) end
  return table.concat(t)
end

function setup(thread)
  thread:set("id", math.random(1, 1000000000))
end

function init(args)
  math.randomseed(os.time() + (id or 0))
end

request = function()
  counter = counter + 1
  local body = string.format(
    '{"serial":"%s","vendor":"acme","product_id":"m1","fingerprint":"v1;machine=%s;mac=%s","package_name":"%s","nonce":"%s"}',
    serial, hex(32), hex(32), package, hex(32))
  return wrk.format("POST", "/v1/activate", {["Content-Type"] = "application/json"}, body)
end

done = function(summary, latency, requests)
  io.write(string.format("p50 %.2f ms  p90 %.2f ms  p99 %.2f ms  max %.2f ms\n",
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000))
end
