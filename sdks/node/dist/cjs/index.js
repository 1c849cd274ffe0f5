"use strict";
var __createBinding = (this && this.__createBinding) || (Object.create ? (function(o, m, k, k2) {
    if (k2 === undefined) k2 = k;
    var desc = Object.getOwnPropertyDescriptor(m, k);
    if (!desc || ("get" in desc ? !m.__esModule : desc.writable || desc.configurable)) {
      desc = { enumerable: true, get: function() { return m[k]; } };
    }
    Object.defineProperty(o, k2, desc);
}) : (function(o, m, k, k2) {
    if (k2 === undefined) k2 = k;
    o[k2] = m[k];
}));
var __exportStar = (this && this.__exportStar) || function(m, exports) {
    for (var p in m) if (p !== "default" && !Object.prototype.hasOwnProperty.call(exports, p)) __createBinding(exports, m, p);
};
Object.defineProperty(exports, "__esModule", { value: true });
exports.VERSION = exports.readEvents = exports.SSEDecoder = exports.verifyWebhookSignatureStrict = exports.verifyWebhookSignature = exports.tryVerifyWithSecrets = exports.signWebhook = exports.WebhookVerificationError = exports.verifyStandardWebhook = exports.signStandardWebhook = exports.DEFAULT_TOLERANCE = exports.withAutoForward = exports.executeWithForwarding = exports.IdempotentStrategy = exports.StepType = exports.Step = exports.ValidationError = exports.UnreachableError = exports.UnavailableError = exports.TimeoutError = exports.RateLimitedError = exports.RateLimitError = exports.NotFoundError = exports.JobFailedError = exports.EZThrottleError = exports.ConflictError = exports.AuthenticationError = exports.toJobSpec = exports.httpStatusOf = exports.EZThrottle = void 0;
var client_js_1 = require("./client.js");
Object.defineProperty(exports, "EZThrottle", { enumerable: true, get: function () { return client_js_1.EZThrottle; } });
Object.defineProperty(exports, "httpStatusOf", { enumerable: true, get: function () { return client_js_1.httpStatusOf; } });
Object.defineProperty(exports, "toJobSpec", { enumerable: true, get: function () { return client_js_1.toJobSpec; } });
var errors_js_1 = require("./errors.js");
Object.defineProperty(exports, "AuthenticationError", { enumerable: true, get: function () { return errors_js_1.AuthenticationError; } });
Object.defineProperty(exports, "ConflictError", { enumerable: true, get: function () { return errors_js_1.ConflictError; } });
Object.defineProperty(exports, "EZThrottleError", { enumerable: true, get: function () { return errors_js_1.EZThrottleError; } });
Object.defineProperty(exports, "JobFailedError", { enumerable: true, get: function () { return errors_js_1.JobFailedError; } });
Object.defineProperty(exports, "NotFoundError", { enumerable: true, get: function () { return errors_js_1.NotFoundError; } });
Object.defineProperty(exports, "RateLimitError", { enumerable: true, get: function () { return errors_js_1.RateLimitError; } });
Object.defineProperty(exports, "RateLimitedError", { enumerable: true, get: function () { return errors_js_1.RateLimitedError; } });
Object.defineProperty(exports, "TimeoutError", { enumerable: true, get: function () { return errors_js_1.TimeoutError; } });
Object.defineProperty(exports, "UnavailableError", { enumerable: true, get: function () { return errors_js_1.UnavailableError; } });
Object.defineProperty(exports, "UnreachableError", { enumerable: true, get: function () { return errors_js_1.UnreachableError; } });
Object.defineProperty(exports, "ValidationError", { enumerable: true, get: function () { return errors_js_1.ValidationError; } });
var step_js_1 = require("./step.js");
Object.defineProperty(exports, "Step", { enumerable: true, get: function () { return step_js_1.Step; } });
var stepType_js_1 = require("./stepType.js");
Object.defineProperty(exports, "StepType", { enumerable: true, get: function () { return stepType_js_1.StepType; } });
var idempotentStrategy_js_1 = require("./idempotentStrategy.js");
Object.defineProperty(exports, "IdempotentStrategy", { enumerable: true, get: function () { return idempotentStrategy_js_1.IdempotentStrategy; } });
__exportStar(require("./types.js"), exports);
var forward_js_1 = require("./forward.js");
Object.defineProperty(exports, "executeWithForwarding", { enumerable: true, get: function () { return forward_js_1.executeWithForwarding; } });
Object.defineProperty(exports, "withAutoForward", { enumerable: true, get: function () { return forward_js_1.withAutoForward; } });
var webhookUtils_js_1 = require("./webhookUtils.js");
Object.defineProperty(exports, "DEFAULT_TOLERANCE", { enumerable: true, get: function () { return webhookUtils_js_1.DEFAULT_TOLERANCE; } });
Object.defineProperty(exports, "signStandardWebhook", { enumerable: true, get: function () { return webhookUtils_js_1.signStandardWebhook; } });
Object.defineProperty(exports, "verifyStandardWebhook", { enumerable: true, get: function () { return webhookUtils_js_1.verifyStandardWebhook; } });
Object.defineProperty(exports, "WebhookVerificationError", { enumerable: true, get: function () { return webhookUtils_js_1.WebhookVerificationError; } });
Object.defineProperty(exports, "signWebhook", { enumerable: true, get: function () { return webhookUtils_js_1.signWebhook; } });
Object.defineProperty(exports, "tryVerifyWithSecrets", { enumerable: true, get: function () { return webhookUtils_js_1.tryVerifyWithSecrets; } });
Object.defineProperty(exports, "verifyWebhookSignature", { enumerable: true, get: function () { return webhookUtils_js_1.verifyWebhookSignature; } });
Object.defineProperty(exports, "verifyWebhookSignatureStrict", { enumerable: true, get: function () { return webhookUtils_js_1.verifyWebhookSignatureStrict; } });
var sse_js_1 = require("./sse.js");
Object.defineProperty(exports, "SSEDecoder", { enumerable: true, get: function () { return sse_js_1.SSEDecoder; } });
Object.defineProperty(exports, "readEvents", { enumerable: true, get: function () { return sse_js_1.readEvents; } });
var transport_js_1 = require("./transport.js");
Object.defineProperty(exports, "VERSION", { enumerable: true, get: function () { return transport_js_1.VERSION; } });
const client_js_2 = require("./client.js");
exports.default = client_js_2.EZThrottle;
