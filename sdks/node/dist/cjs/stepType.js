"use strict";
Object.defineProperty(exports, "__esModule", { value: true });
exports.StepType = void 0;
/** How a `Step` runs. */
var StepType;
(function (StepType) {
    /** Call the target from here first; hand the call to EZThrottle only on the codes listed in
     * `fallbackOnError` (default 429, 500, 502, 503, 504) or on a network error. */
    StepType["FRUGAL"] = "frugal";
    /** Submit to EZThrottle straight away (the default). */
    StepType["PERFORMANCE"] = "performance";
})(StepType || (exports.StepType = StepType = {}));
