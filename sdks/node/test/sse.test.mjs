// The SSE decoder on its own: line endings, chunk boundaries, comments, multi-line data.
import assert from "node:assert/strict";
import { test } from "node:test";
import { SSEDecoder, readEvents } from "ezthrottle";

async function decodeChunks(chunks) {
  const enc = new TextEncoder();
  const body = new ReadableStream({
    start(ctl) {
      for (const c of chunks) ctl.enqueue(typeof c === "string" ? enc.encode(c) : new Uint8Array(c));
      ctl.close();
    },
  });
  const out = [];
  for await (const ev of readEvents(body)) out.push(ev);
  return out;
}

test("events split anywhere (even inside a character), any line ending, comments skipped, JSON parsed", async () => {
  const stream = ': keep-alive\r\nevent: queued\r\ndata: {"job_id":"job_1"}\r\n\r\nevent: attempt\ndata: {"n":1}\n\ndata: line one\rdata: caf\u00e9 \u{1F680}\r\r';
  for (let cut = 1; cut < Buffer.byteLength(stream); cut++) {
    const bytes = Buffer.from(stream);
    const evs = await decodeChunks([bytes.subarray(0, cut), bytes.subarray(cut)]);
    assert.deepEqual(
      evs.map((e) => [e.event, e.data]),
      [["queued", { job_id: "job_1" }], ["attempt", { n: 1 }], ["message", "line one\ncaf\u00e9 \u{1F680}"]],
      `cut at ${cut}`,
    );
  }
});

test("an id is remembered; a blank line without data dispatches nothing", () => {
  const d = new SSEDecoder();
  assert.equal(d.feed("id: 7"), null);
  assert.equal(d.feed("event: x"), null);
  assert.equal(d.feed(""), null);
  d.feed("data:no-space");
  assert.deepEqual(d.feed(""), { event: "message", data: "no-space", id: "7" });
});
