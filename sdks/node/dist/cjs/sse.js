"use strict";
/** Server-Sent Events (WHATWG rules), decoded from a byte stream. */
Object.defineProperty(exports, "__esModule", { value: true });
exports.SSEDecoder = void 0;
exports.readEvents = readEvents;
/** Fed one line at a time (without its end of line); answers an event at each blank line.
 * Multi-line `data` is joined with "\n", comments (keep-alives) are skipped, `id` remembered. */
class SSEDecoder {
    event = "";
    data = [];
    lastId = null;
    feed(line) {
        if (line === "") {
            if (this.data.length === 0) {
                this.event = "";
                return null;
            }
            const text = this.data.join("\n");
            let data = text;
            try {
                data = JSON.parse(text);
            }
            catch {
                // not JSON: keep the text
            }
            const ev = { event: this.event || "message", data, id: this.lastId };
            this.event = "";
            this.data = [];
            return ev;
        }
        if (line.startsWith(":"))
            return null;
        const colon = line.indexOf(":");
        const name = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? "" : line.slice(colon + 1);
        if (value.startsWith(" "))
            value = value.slice(1);
        if (name === "data")
            this.data.push(value);
        else if (name === "event")
            this.event = value;
        else if (name === "id" && !value.includes("\0"))
            this.lastId = value;
        return null;
    }
}
exports.SSEDecoder = SSEDecoder;
/** The events of a `text/event-stream` body, in order. `onBytes` is called whenever bytes arrive
 * (the caller's idle timer). */
async function* readEvents(body, onBytes = () => undefined) {
    const decoder = new TextDecoder();
    const sse = new SSEDecoder();
    const reader = body.getReader();
    let buf = "";
    try {
        for (;;) {
            const { done, value } = await reader.read();
            if (done)
                break;
            onBytes();
            buf += decoder.decode(value, { stream: true });
            // A lone "\r" at the end may be the first half of "\r\n": keep it for the next chunk.
            const lines = buf.split(/\r\n|\r(?!$)|\n/);
            buf = lines.pop() ?? "";
            for (const line of lines) {
                const ev = sse.feed(line);
                if (ev)
                    yield ev;
            }
        }
        buf += decoder.decode();
        for (const line of buf === "" ? [] : buf.split(/\r\n|\r|\n/).concat("")) {
            const ev = sse.feed(line);
            if (ev)
                yield ev;
        }
    }
    finally {
        reader.releaseLock();
        await body.cancel().catch(() => undefined);
    }
}
