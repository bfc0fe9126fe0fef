// Drives llm-proxy's Anthropic Messages API door with the official Anthropic TypeScript SDK:
// one message, one stream (text events and the final message), one token count, and an
// unknown model from a client that sends its key in x-api-key.
// Env: LLM_PROXY_URL, LLM_PROXY_API_KEY, LLM_PROXY_MODEL. Prints one JSON object.
import Anthropic from "@anthropic-ai/sdk";

const baseURL = process.env.LLM_PROXY_URL;
const key = process.env.LLM_PROXY_API_KEY;
const model = process.env.LLM_PROXY_MODEL;
const client = new Anthropic({ baseURL, apiKey: key, maxRetries: 0, timeout: 20_000 });
const messages = [{ role: "user", content: "Say hello to the test suite" }];

async function create() {
  const { data, response } = await client.messages
    .create({ model, max_tokens: 50, messages })
    .withResponse();
  return {
    id: data.id,
    model: data.model,
    text: data.content.map((block) => block.text ?? "").join(""),
    stop_reason: data.stop_reason,
    usage: data.usage,
    request_id: response.headers.get("request-id"),
  };
}

async function stream() {
  const events = [];
  let text = "";
  const running = client.messages.stream({ model, max_tokens: 50, messages });
  running.on("streamEvent", (event) => events.push(event.type));
  running.on("text", (delta) => {
    text += delta;
  });
  const final = await running.finalMessage();
  return {
    text,
    final_text: final.content.map((block) => block.text ?? "").join(""),
    model: final.model,
    stop_reason: final.stop_reason,
    usage: final.usage,
    events,
  };
}

async function countTokens() {
  const counted = await client.messages.countTokens({ model, messages });
  return counted.input_tokens;
}

async function notFound() {
  const viaApiKey = new Anthropic({
    baseURL,
    apiKey: null,
    defaultHeaders: { "x-api-key": key },
    maxRetries: 0,
    timeout: 20_000,
  });
  try {
    await viaApiKey.messages.create({ model: "no-such-model", max_tokens: 5, messages });
    return { raised: null };
  } catch (err) {
    return { raised: err.constructor.name, status: err.status, type: err.error?.error?.type };
  }
}

const result = {
  create: await create(),
  stream: await stream(),
  count: await countTokens(),
  not_found: await notFound(),
};
console.log(JSON.stringify(result));
