-- wrk script for bench/token_load.py: POST /auth/token for user0..user{N-1}@example.com in turn,
-- with the API key in X-API-Key, and one machine-readable summary line at the end.
--
--   wrk -t1 -c16 -d10s -s bench/token.lua http://127.0.0.1:8000/auth/token -- KEY 1000

local api_key, users = "", 1000
local counter = 0

function init(args)
  api_key = args[1] or ""
  users = tonumber(args[2] or "1000")
  -- Each wrk thread has its own Lua state: start them at different users.
  counter = math.random(0, users - 1)
end

function request()
  local body = string.format('{"provider": "google", "user_email": "user%d@example.com"}',
                             counter % users)
  counter = counter + 1
  return wrk.format("POST", nil, {["Content-Type"] = "application/json",
                                  ["X-API-Key"] = api_key}, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, ' ..
    '"socket_errors": %d, "non_2xx": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status))
end
