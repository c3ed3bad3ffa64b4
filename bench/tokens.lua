-- wrk script: every request carries the next token of the file named after `--`
-- (cycling), and done() prints one JSON line the bench parses.
--
-- "issued" counts the calls of request() in the thread, so the bench knows how far into the
-- token file this run got (tokens 1..issued, cycling) and can count the distinct tokens it
-- sent. wrk 4 calls request() once more than it sends (a check before the first request),
-- so this may be one past the last token sent; the bench allows for that (see bench.py).
--
-- An optional second argument is a path prefix: then every request goes to a path of its own,
-- the prefix followed by the request's number (prefix .. issued), e.g. a new document id per
-- request on the bench's policy-decision rows, so that no two requests ask the PDP the same.
local tokens = {}
local i = 0
local prefix = nil
issued = 0 -- global: read by done() through thread:get()

local threads = {}

function setup(thread)
  threads[#threads + 1] = thread
end

function init(args)
  for line in io.lines(args[1]) do
    if #line > 0 then tokens[#tokens + 1] = "Bearer " .. line end
  end
  assert(#tokens > 0, "no tokens in " .. args[1])
  prefix = args[2]
end

function request()
  i = i % #tokens + 1
  issued = issued + 1
  local path = nil
  if prefix then path = prefix .. issued end
  return wrk.format("GET", path, { ["Authorization"] = tokens[i] })
end

function done(summary, latency, requests)
  local e = summary.errors
  local n = 0
  for _, t in ipairs(threads) do n = n + (t:get("issued") or 0) end
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,' ..
    '"status_errors":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d,"issued":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect, e.read, e.write, e.timeout, n))
end
