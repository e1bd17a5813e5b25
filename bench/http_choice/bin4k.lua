-- (b) 4 KiB binary body (deterministic bytes 0..255)
wrk.method = "POST"
wrk.path = "/v2/models/m/infer"
wrk.headers["Content-Type"] = "application/octet-stream"
local t = {}
for i = 0, 4095 do t[#t + 1] = string.char((i * 7 + 3) % 256) end
wrk.body = table.concat(t)
dofile(os.getenv("HC_DIR") .. "/common.lua")
