-- wrk script: every request carries the next token of the file named after `--`
-- (cycling), and done() prints one JSON line the bench parses.
local tokens = {}
local i = 0

function init(args)
  for line in io.lines(args[1]) do
    if #line > 0 then tokens[#tokens + 1] = "Bearer " .. line end
  end
  assert(#tokens > 0, "no tokens in " .. args[1])
end

function request()
  i = i % #tokens + 1
  return wrk.format("GET", nil, { ["Authorization"] = tokens[i] })
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,' ..
    '"status_errors":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect, e.read, e.write, e.timeout))
end
