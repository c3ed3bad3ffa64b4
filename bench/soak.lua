-- wrk script for bench/soak: cycles through a file of "kind<TAB>Authorization value" lines
-- (argument after `--`), sends each as GET /api/soak/<kind> with headers Authorization (left
-- out when the value is empty) and x-soak-kind, and counts responses by kind x status. The
-- kind comes back in the response header x-soak-kind (the soak's Envoy adds it to upstream
-- answers and to local replies), since wrk's response() does not see its request. A 503
-- without Retry-After is counted as "503-noRA" (not Tollgate's fail-closed answer).
-- done() prints one line: SOAK {"requests":..,"duration_us":..,"errors":{..},"counts":{"kind status":n}}
local entries = {}
local i = 0
counts = {} -- global: read by done() through thread:get()

local threads = {}

function setup(thread)
  threads[#threads + 1] = thread
end

function init(args)
  for line in io.lines(args[1]) do
    local kind, auth = line:match("^([^\t]+)\t(.*)$")
    if kind then
      local headers = { ["x-soak-kind"] = kind }
      if #auth > 0 then headers["Authorization"] = auth end
      entries[#entries + 1] = wrk.format("GET", "/api/soak/" .. kind, headers)
    end
  end
  assert(#entries > 0, "no entries in " .. args[1])
  -- each thread starts at a different place of the list
  i = math.random(#entries) - 1
end

function request()
  i = i % #entries + 1
  return entries[i]
end

function response(status, headers, body)
  local kind = headers["x-soak-kind"] or "?"
  kind = kind:match("^([^,%s]+)") or "?" -- added twice (route and local reply): take one
  local key = kind .. " " .. status
  if status == 503 and not headers["retry-after"] then key = key .. "-noRA" end
  counts[key] = (counts[key] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    local c = t:get("counts") or {}
    for k, v in pairs(c) do total[k] = (total[k] or 0) + v end
  end
  local parts = {}
  for k, v in pairs(total) do parts[#parts + 1] = string.format('"%s":%d', k, v) end
  local e = summary.errors
  io.write(string.format(
    'SOAK {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,' ..
    '"errors":{"status":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d},"counts":{%s}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect, e.read, e.write, e.timeout, table.concat(parts, ",")))
end
