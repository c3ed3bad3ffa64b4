-- wrk script for the DPoP rows: every request carries the access token (scheme DPoP) and the
-- next unused proof of the pool file named after `--` (lines "<slot> <proof>", in slot order,
-- made by bench/proofs.py). Each proof is sent at most once, never again: at wall-clock second
-- t it takes proofs of slot t, or of later slots if slot t's are used up, and skips those of
-- slots that have passed (their proofs would be stale, see bench/proofs.py). A pool that runs
-- out stops the thread and is reported (exhausted > 0): the bench then fails the row instead
-- of sending a replay, which Tollgate would refuse.
--
-- done() prints one JSON line like tokens.lua's, plus "sent" (proofs handed to wrk, one of
-- which wrk 4 uses for a check before connecting and does not send), "skipped" (proofs of
-- slots that passed unused) and "exhausted" (requests that found the pool empty).
local slots, proofs = {}, {}
local i = 0
local auth
issued, skipped, exhausted = 0, 0, 0 -- globals: read by done() through thread:get()

local threads = {}

function setup(thread)
  threads[#threads + 1] = thread
  -- Every thread would load the same pool and send the same proofs.
  assert(#threads == 1, "proofs.lua: run wrk with one thread (-t1)")
end

function init(args)
  auth = "DPoP " .. io.open(args[1]):read("*l")
  for line in io.lines(args[2]) do
    local sp = line:find(" ", 1, true)
    if sp then
      slots[#slots + 1] = tonumber(line:sub(1, sp - 1))
      proofs[#proofs + 1] = line:sub(sp + 1)
    end
  end
  assert(#proofs > 0, "no proofs in " .. args[2])
end

function request()
  if not auth then
    -- wrk's check of the script, in its main Lua state (init() never ran there): not sent.
    return wrk.format("GET", nil, {})
  end
  local now = os.time()
  i = i + 1
  while i <= #proofs and slots[i] < now do
    i = i + 1
    skipped = skipped + 1
  end
  if i > #proofs then
    exhausted = exhausted + 1
    wrk.thread:stop()
    -- Not a replay: no proof at all, which Tollgate refuses (the row fails either way).
    return wrk.format("GET", nil, { ["Authorization"] = auth })
  end
  issued = issued + 1
  return wrk.format("GET", nil, { ["Authorization"] = auth, ["DPoP"] = proofs[i] })
end

function done(summary, latency, requests)
  local e = summary.errors
  local n, s, x = 0, 0, 0
  for _, t in ipairs(threads) do
    n = n + (t:get("issued") or 0)
    s = s + (t:get("skipped") or 0)
    x = x + (t:get("exhausted") or 0)
  end
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,' ..
    '"status_errors":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d,"issued":%d,' ..
    '"skipped":%d,"exhausted":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect, e.read, e.write, e.timeout, n, s, x))
end
