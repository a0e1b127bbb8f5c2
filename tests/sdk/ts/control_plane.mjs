// The TypeScript SDK's control plane against Colloquy: controlPlane.connect (an observer of a
// live chat) and controlPlane.send; prints what the observer received as JSON.
import { HumeClient } from "hume";
const [base, apiKey, chatId] = process.argv.slice(2);
const client = new HumeClient({ apiKey, environment: base });
const socket = await client.empathicVoice.controlPlane.connect({ chat_id: chatId, reconnectAttempts: 0 });
const got = [];
socket.on("message", (m) => got.push(m));
await socket.waitForOpen();
const seen = (text) => got.some((m) => m.type === "user_message" && m.message && m.message.content === text);
const until = async (ok) => {
  const deadline = Date.now() + 10000;
  while (!ok() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25));
};
await until(() => seen("before the observer"));
await client.empathicVoice.controlPlane.send(chatId, { type: "user_input", text: "from typescript" });
await until(() => seen("from typescript"));
socket.close();
console.log(JSON.stringify({ types: got.map((m) => m.type), chat_id: got[0] && got[0].chatId, echoed: seen("from typescript") }));
process.exit(0);
