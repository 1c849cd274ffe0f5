/**
 * Types. The first half is the hosted 1.4.0 SDK's (camelCase options, `JobPayload`, `IStep`);
 * the second is the server's own wire format (snake_case, as in docs/api.md), which the native
 * calls take and return unchanged.
 */
/** The states a job never leaves. */
export const FINAL_STATES = ["succeeded", "failed", "expired", "cancelled"];
