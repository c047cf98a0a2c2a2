-- wrk script for benches/server/compare.sh.
-- wrk ... -s kv.lua -- OP DEPTH [KEYS]
--   OP: hello (GET /), get (GET a random one of 100k keys), put (PUT 100 bytes to a random key; every
--       value is unique, since sled skips a write equal to the stored value), preload (PUT every key once,
--       in order); DEPTH: requests per pipelined batch (default 1); KEYS: how many keys (default 100000).
-- Keys are 16 bytes, "key" and 13 digits, as in the engine benchmarks.
local op, depth, keys, counter = "get", 1, 100000, 0
local body = string.rep("v", 100)

function init(args)
  op = args[1] or "get"
  depth = tonumber(args[2] or "1")
  keys = tonumber(args[3] or "100000")
end

local function one()
  if op == "hello" then
    return wrk.format("GET", "/")
  end
  local k
  if op == "preload" then
    k = counter % keys
  else
    k = math.random(0, keys - 1)
  end
  local path = string.format("/v1/kv/key%013d", k)
  if op == "get" then
    return wrk.format("GET", path)
  end
  counter = counter + 1
  return wrk.format("PUT", path, nil, string.format("%012d", counter) .. string.sub(body, 13))
end

function request()
  if depth == 1 then
    return one()
  end
  local batch = {}
  for i = 1, depth do
    batch[i] = one()
  end
  return table.concat(batch)
end
