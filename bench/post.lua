-- wrk script: POST an OpenAI chat-completions body.
-- Arguments after `--` (each falls back to an env var, then a default):
--   1 model   BENCH_MODEL   gpt-4o-mini
--   2 stream  BENCH_STREAM  0      (1 adds "stream": true)
--   3 key     BENCH_KEY     sk-bench-client  (sent as Authorization: Bearer <key>)
--   4 api     BENCH_API     chat   (messages: an Anthropic Messages body, with max_tokens;
--                                    responses / responses-stored: a Responses API body)
-- wrk calls init() once per thread, before it formats the (static) request.
function init(args)
  local model = args[1] or os.getenv("BENCH_MODEL") or "gpt-4o-mini"
  local stream = args[2] or os.getenv("BENCH_STREAM") or "0"
  local key = args[3] or os.getenv("BENCH_KEY") or "sk-bench-client"
  local api = args[4] or os.getenv("BENCH_API") or "chat"
  local body = '{"model":"' .. model .. '","messages":[{"role":"user","content":"Say hello"}]'
  if api == "messages" then
    body = body .. ',"max_tokens":256'
  end
  if api == "responses" or api == "responses-stored" then  -- responses: "store": false
    body = '{"model":"' .. model .. '","input":"Say hello"'
    if api == "responses" then
      body = body .. ',"store":false'
    end
  end
  if stream == "1" or stream == "true" then
    body = body .. ',"stream":true'
  end
  wrk.method = "POST"
  wrk.body = body .. "}"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. key
end
