/** How a `Step` without an explicit `idempotentKey` is deduplicated. */
export declare enum IdempotentStrategy {
    /** The server derives the key from the call (tenant, credential, method, url, body): the same
     * call twice is one job (the default). */
    HASH = "hash",
    /** A fresh random key per `execute()`: every call runs (polling, scheduled jobs). */
    UNIQUE = "unique"
}
