// One TypeScript-SDK call against Colloquy: synthesizeJson with a library voice.
import { HumeClient } from "hume";
const [base, apiKey] = process.argv.slice(2);
const client = new HumeClient({ apiKey, environment: base });
const res = await client.tts.synthesizeJson({
  utterances: [{ text: "Hello from TypeScript.", voice: { name: "Ava Song", provider: "HUME_AI" } }],
  format: { type: "wav" },
  includeTimestampTypes: ["word"],
});
const g = res.generations[0];
const words = g.snippets[0][0].timestamps.map((t) => t.text);
console.log(JSON.stringify({ id: g.generationId, duration: g.duration, format: g.encoding.format, rate: g.encoding.sampleRate, words, bytes: Buffer.from(g.audio, "base64").length }));
const voices = await client.tts.voices.list({ provider: "HUME_AI" });
const names = [];
for await (const v of voices) names.push(v.name);
console.log(JSON.stringify({ voices: names.length, ava: names.includes("Ava Song") }));
