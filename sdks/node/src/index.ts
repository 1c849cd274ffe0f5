export { EZThrottle, httpStatusOf, toJobSpec } from "./client.js";
export type { ListOptions, SubmitOptions } from "./client.js";
export {
  AuthenticationError,
  ConflictError,
  EZThrottleError,
  JobFailedError,
  NotFoundError,
  RateLimitError,
  RateLimitedError,
  TimeoutError,
  UnavailableError,
  UnreachableError,
  ValidationError,
} from "./errors.js";
export type { ErrorDetails } from "./errors.js";
export { Step } from "./step.js";
export { StepType } from "./stepType.js";
export { IdempotentStrategy } from "./idempotentStrategy.js";
export * from "./types.js";
export { executeWithForwarding, withAutoForward } from "./forward.js";
export type { ForwardRequest } from "./forward.js";
export {
  DEFAULT_TOLERANCE,
  signStandardWebhook,
  verifyStandardWebhook,
  WebhookVerificationError,
  signWebhook,
  tryVerifyWithSecrets,
  verifyWebhookSignature,
  verifyWebhookSignatureStrict,
} from "./webhookUtils.js";
export type { VerificationCode, VerificationResult } from "./webhookUtils.js";
export { SSEDecoder, readEvents } from "./sse.js";
export { VERSION } from "./transport.js";

import { EZThrottle } from "./client.js";
export default EZThrottle;
