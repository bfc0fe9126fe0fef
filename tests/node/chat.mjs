// Drives llm-proxy with the official OpenAI Node SDK: one chat completion and one stream.
// Env: LLM_PROXY_BASE_URL, LLM_PROXY_API_KEY, LLM_PROXY_MODEL. Prints one JSON object.
import OpenAI from "openai";

const client = new OpenAI({
  baseURL: process.env.LLM_PROXY_BASE_URL,
  apiKey: process.env.LLM_PROXY_API_KEY,
  maxRetries: 0,
  timeout: 20_000,
});
const model = process.env.LLM_PROXY_MODEL ?? "gpt-4o-mini";
const messages = [{ role: "user", content: "Say hello to the test suite" }];

async function chat() {
  const { data, response } = await client.chat.completions
    .create({ model, messages })
    .withResponse();
  return {
    model: data.model,
    content: data.choices[0].message.content,
    finish_reason: data.choices[0].finish_reason,
    usage: data.usage,
    route: response.headers.get("x-llm-proxy-route"),
  };
}

async function stream() {
  const chunks = await client.chat.completions.create({
    model,
    messages,
    stream: true,
    stream_options: { include_usage: true },
  });
  let content = "";
  let finishReason = null;
  let usage = null;
  const models = new Set();
  let count = 0;
  for await (const chunk of chunks) {
    count += 1;
    models.add(chunk.model);
    for (const choice of chunk.choices) {
      content += choice.delta?.content ?? "";
      finishReason = choice.finish_reason ?? finishReason;
    }
    if (chunk.usage) usage = chunk.usage;
  }
  return { content, finish_reason: finishReason, usage, models: [...models], chunks: count };
}

async function notFound() {
  try {
    await client.chat.completions.create({ model: "no-such-model", messages });
    return { raised: null };
  } catch (err) {
    return { raised: err.constructor.name, status: err.status, code: err.code ?? null };
  }
}

const result = { chat: await chat(), stream: await stream(), not_found: await notFound() };
console.log(JSON.stringify(result));
