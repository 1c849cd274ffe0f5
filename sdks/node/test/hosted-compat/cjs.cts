// CommonJS callers (`require` condition of the exports map).
import ezthrottle = require("ezthrottle");

const client = new ezthrottle.EZThrottle({ apiKey: "k" });
const step = new ezthrottle.Step(client).type(ezthrottle.StepType.PERFORMANCE);
const check: ezthrottle.VerificationResult = ezthrottle.verifyWebhookSignature("{}", "t=1,v1=00", "secret");
const Default: typeof ezthrottle.EZThrottle = ezthrottle.default;
export = { step, check, Default };
