package ezthrottle

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// VerificationResult is a signature check's outcome. Reason is the hosted SDK's string
// ("valid", "no_signature_header", "missing_v1_signature", "timestamp_expired (diff=Ns,
// tolerance=Ns)", "signature_mismatch", "verification_error: …"; with two secrets
// "valid_primary", "valid_secondary", "both_secrets_failed (primary: …)").
type VerificationResult struct {
	Verified bool
	Reason   string
	// Code is the reason as one of the codes all EZThrottle SDKs share: "valid", or
	// "no_signature", "malformed", "too_old", "too_new", "mismatch".
	Code string
}

// Shared failure codes (VerificationResult.Code).
const (
	VerifyValid       = "valid"
	VerifyNoSignature = "no_signature"
	VerifyMalformed   = "malformed"
	VerifyTooOld      = "too_old"
	VerifyTooNew      = "too_new"
	VerifyMismatch    = "mismatch"
)

// WebhookVerificationError is VerifyWebhookSignatureStrict's error.
type WebhookVerificationError struct {
	Message string
	// Reason and Code are the failed VerificationResult's.
	Reason string
	Code   string
}

func (e *WebhookVerificationError) Error() string { return e.Message }

// VerifyWebhookSignature checks X-EZThrottle-Signature ("t=<unix s>,v1=<hex HMAC-SHA256 of
// "<t>.<body>">[,v1=…]") against the raw body with one secret; the timestamp may be at most
// tolerance seconds away from now. Every v1 in the header is tried (the server sends one per
// active secret).
//
//	body, _ := io.ReadAll(r.Body)
//	res := ezthrottle.VerifyWebhookSignature(body, r.Header.Get("X-EZThrottle-Signature"), secret, 300)
//	if !res.Verified {
//	    http.Error(w, "Invalid signature: "+res.Reason, http.StatusUnauthorized)
//	    return
//	}
func VerifyWebhookSignature(payload []byte, signatureHeader, secret string, tolerance int) VerificationResult {
	return VerifyWebhookSignatureAt(payload, signatureHeader, secret, tolerance, time.Now())
}

// VerifyWebhookSignatureAt is VerifyWebhookSignature at a given time (tests, replays).
func VerifyWebhookSignatureAt(payload []byte, signatureHeader, secret string, tolerance int, now time.Time) VerificationResult {
	if signatureHeader == "" {
		return VerificationResult{Reason: "no_signature_header", Code: VerifyNoSignature}
	}
	var ts string
	var haveTS bool
	var sigs []string
	for _, part := range strings.Split(signatureHeader, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			continue
		}
		switch k {
		case "t":
			ts, haveTS = v, true
		case "v1":
			sigs = append(sigs, v)
		}
	}
	if len(sigs) == 0 {
		return VerificationResult{Reason: "missing_v1_signature", Code: VerifyNoSignature}
	}
	if strings.Join(sigs, "") == "" {
		// Only empty v1= values: the hosted reason, and never a match.
		return VerificationResult{Reason: "missing_v1_signature", Code: VerifyMismatch}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if !haveTS || err != nil || sec < 0 || strings.HasPrefix(ts, "+") {
		return VerificationResult{
			Reason: fmt.Sprintf("verification_error: invalid timestamp %q", ts),
			Code:   VerifyMalformed,
		}
	}
	diff := now.Unix() - sec
	code := VerifyTooOld
	if diff < 0 {
		diff, code = -diff, VerifyTooNew
	}
	if diff > int64(tolerance) {
		return VerificationResult{
			Reason: fmt.Sprintf("timestamp_expired (diff=%ds, tolerance=%ds)", diff, tolerance),
			Code:   code,
		}
	}
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(ts))
	mac.Write([]byte{'.'})
	mac.Write(payload)
	want := []byte(hex.EncodeToString(mac.Sum(nil)))
	ok := false
	for _, sig := range sigs {
		// Every v1 is compared (no early exit); an empty one never matches.
		if sig != "" && hmac.Equal(want, []byte(sig)) {
			ok = true
		}
	}
	if ok {
		return VerificationResult{Verified: true, Reason: "valid", Code: VerifyValid}
	}
	return VerificationResult{Reason: "signature_mismatch", Code: VerifyMismatch}
}

// VerifyWebhookSignatureStrict is VerifyWebhookSignature returning a *WebhookVerificationError
// when the signature does not verify.
func VerifyWebhookSignatureStrict(payload []byte, signatureHeader, secret string, tolerance int) error {
	return strict(VerifyWebhookSignature(payload, signatureHeader, secret, tolerance))
}

func strict(r VerificationResult) error {
	if r.Verified {
		return nil
	}
	return &WebhookVerificationError{
		Message: "Webhook signature verification failed: " + r.Reason,
		Reason:  r.Reason,
		Code:    r.Code,
	}
}

// TryVerifyWithSecrets verifies with the primary secret, then the secondary (if not ""), for
// receivers in the middle of a rotation: Reason "valid_primary", "valid_secondary" or
// "both_secrets_failed (primary: <primary's reason>)".
func TryVerifyWithSecrets(payload []byte, signatureHeader, primarySecret, secondarySecret string, tolerance int) VerificationResult {
	return TryVerifyWithSecretsAt(payload, signatureHeader, primarySecret, secondarySecret, tolerance, time.Now())
}

// TryVerifyWithSecretsAt is TryVerifyWithSecrets at a given time.
func TryVerifyWithSecretsAt(payload []byte, signatureHeader, primarySecret, secondarySecret string, tolerance int, now time.Time) VerificationResult {
	primary := VerifyWebhookSignatureAt(payload, signatureHeader, primarySecret, tolerance, now)
	if primary.Verified {
		return VerificationResult{Verified: true, Reason: "valid_primary", Code: VerifyValid}
	}
	if secondarySecret != "" {
		if VerifyWebhookSignatureAt(payload, signatureHeader, secondarySecret, tolerance, now).Verified {
			return VerificationResult{Verified: true, Reason: "valid_secondary", Code: VerifyValid}
		}
	}
	return VerificationResult{
		Reason: fmt.Sprintf("both_secrets_failed (primary: %s)", primary.Reason),
		Code:   primary.Code,
	}
}

// SignWebhook is the X-EZThrottle-Signature value the server sends for a body at a time, one
// v1 per secret (to test receivers).
func SignWebhook(payload []byte, timestamp int64, secrets ...string) string {
	ts := strconv.FormatInt(timestamp, 10)
	var b strings.Builder
	b.WriteString("t=" + ts)
	for _, s := range secrets {
		mac := hmac.New(sha256.New, []byte(s))
		mac.Write([]byte(ts + "."))
		mac.Write(payload)
		b.WriteString(",v1=" + hex.EncodeToString(mac.Sum(nil)))
	}
	return b.String()
}

// ---------------------------------------------------------------------------- Standard Webhooks

// VerifyStandardWebhook checks the Standard Webhooks headers the server also sends
// (webhook-id, webhook-timestamp, webhook-signature "v1,<base64>" …). A "whsec_" secret is
// base64; any other is used as its bytes (as the server signs). Reason is "valid" or the
// shared code.
func VerifyStandardWebhook(payload []byte, headers http.Header, secret string, tolerance int) VerificationResult {
	return VerifyStandardWebhookAt(payload, headers, secret, tolerance, time.Now())
}

// VerifyStandardWebhookAt is VerifyStandardWebhook at a given time.
func VerifyStandardWebhookAt(payload []byte, headers http.Header, secret string, tolerance int, now time.Time) VerificationResult {
	fail := func(code string) VerificationResult { return VerificationResult{Reason: code, Code: code} }
	msgID := headers.Get("webhook-id")
	ts := strings.TrimSpace(headers.Get("webhook-timestamp"))
	sigHeader := headers.Get("webhook-signature")
	if sigHeader == "" {
		return fail(VerifyNoSignature)
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if msgID == "" || err != nil || sec < 0 || strings.HasPrefix(ts, "+") {
		return fail(VerifyMalformed)
	}
	var sigs []string
	for _, p := range strings.Split(sigHeader, " ") {
		if version, value, ok := strings.Cut(p, ","); ok && version == "v1" {
			sigs = append(sigs, value)
		}
	}
	if len(sigs) == 0 {
		return fail(VerifyNoSignature)
	}
	if d := now.Unix() - sec; d > int64(tolerance) {
		return fail(VerifyTooOld)
	} else if -d > int64(tolerance) {
		return fail(VerifyTooNew)
	}
	key := []byte(secret)
	if strings.HasPrefix(secret, "whsec_") {
		if key, err = base64.StdEncoding.DecodeString(secret[len("whsec_"):]); err != nil {
			return fail(VerifyMalformed)
		}
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(msgID + "." + ts + "."))
	mac.Write(payload)
	want := mac.Sum(nil)
	ok := false
	for _, s := range sigs {
		got, err := base64.StdEncoding.DecodeString(s)
		if err == nil && len(got) > 0 && hmac.Equal(want, got) {
			ok = true
		}
	}
	if ok {
		return VerificationResult{Verified: true, Reason: "valid", Code: VerifyValid}
	}
	return fail(VerifyMismatch)
}
