"use strict";
/**
 * Hand a call to EZThrottle from existing code without restructuring its error handling: the
 * wrapped function returns `{ forward: ForwardRequest }` (on a 429, a network error, …) and the
 * wrapper submits it as a `Step` (FRUGAL unless `stepType` says otherwise).
 */
Object.defineProperty(exports, "__esModule", { value: true });
exports.executeWithForwarding = executeWithForwarding;
exports.withAutoForward = withAutoForward;
const step_js_1 = require("./step.js");
const stepType_js_1 = require("./stepType.js");
function isForward(value) {
    return typeof value === "object" && value !== null && "forward" in value;
}
/** Runs `fn`; if it answers `{ forward }`, executes that call through EZThrottle and answers the
 * step's result, else answers `fn`'s result unchanged. */
async function executeWithForwarding(client, fn) {
    const result = await fn();
    if (!isForward(result))
        return result;
    const f = result.forward;
    const step = new step_js_1.Step(client).url(f.url).method(f.method ?? "GET");
    if (f.headers)
        step.headers(f.headers);
    if (f.body)
        step.body(f.body);
    if (f.idempotentKey)
        step.idempotentKey(f.idempotentKey);
    if (f.metadata)
        step.metadata(f.metadata);
    if (f.webhooks)
        step.webhooks(f.webhooks);
    if (f.regions)
        step.regions(f.regions);
    step.type(f.stepType ?? stepType_js_1.StepType.FRUGAL);
    if (f.fallbackOnError && f.fallbackOnError.length > 0)
        step.fallbackOnError(f.fallbackOnError);
    return step.execute();
}
/** `fn` wrapped with `executeWithForwarding`. */
function withAutoForward(client, fn) {
    return (...args) => executeWithForwarding(client, () => fn(...args));
}
