// Package ezthrottle is the Go client of an EZThrottle server: it hands HTTP calls to the
// server as durable jobs, which it stores, runs under per-lane rate limits, retries, and
// reports to signed webhooks.
//
// Two surfaces share one Client:
//
//   - The native API (Submit, Get, Wait, Events, Cancel, Retry, Batch, List): every call takes a
//     context.Context first, returns typed errors (*EZThrottleError, usable with errors.As and
//     errors.Is against ErrNotFound, ErrRateLimited, …), and idempotent calls are retried with
//     exponential backoff and full jitter on 5xx, 429 and network errors.
//   - The names of the hosted EZThrottle Go SDK 1.2.0 (NewClient, WithTracktTagsURL, NewStep,
//     StepType, IdempotentStrategy, SubmitJob, ExecuteWithForwarding, VerifyWebhookSignature,
//     WebhookHandler, WatchWebhook, …), so code written for it compiles against this package with
//     only the import path changed. These go through the server's hosted envelope
//     (POST /api/v1/proxy), as the hosted SDK did.
//
// The package uses the standard library only.
package ezthrottle

// Version is this SDK's version, sent in the User-Agent header.
const Version = "0.1.0"
