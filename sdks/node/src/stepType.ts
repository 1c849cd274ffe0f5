/** How a `Step` runs. */
export enum StepType {
  /** Call the target from here first; hand the call to EZThrottle only on the codes listed in
   * `fallbackOnError` (default 429, 500, 502, 503, 504) or on a network error. */
  FRUGAL = "frugal",
  /** Submit to EZThrottle straight away (the default). */
  PERFORMANCE = "performance",
}
