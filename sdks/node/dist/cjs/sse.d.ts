/** Server-Sent Events (WHATWG rules), decoded from a byte stream. */
import type { JobEvent } from "./types.js";
/** Fed one line at a time (without its end of line); answers an event at each blank line.
 * Multi-line `data` is joined with "\n", comments (keep-alives) are skipped, `id` remembered. */
export declare class SSEDecoder {
    private event;
    private data;
    lastId: string | null;
    feed(line: string): JobEvent | null;
}
/** The events of a `text/event-stream` body, in order. `onBytes` is called whenever bytes arrive
 * (the caller's idle timer). */
export declare function readEvents(body: ReadableStream<Uint8Array>, onBytes?: () => void): AsyncGenerator<JobEvent>;
