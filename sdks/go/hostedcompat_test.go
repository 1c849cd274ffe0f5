package ezthrottle_test

import (
	"strings"
	"testing"
	"time"

	"github.com/ezthrottle/ezthrottle/sdks/go/internal/hostedcompat"
)

// A program written with the hosted SDK's names runs against this server with only the base
// URL changed: Step → job succeeded → signed webhook verified and stored.
func TestHostedStyleQuickStartRunsAgainstTheServer(t *testing.T) {
	t.Parallel()
	res, err := hostedcompat.RunHostedQuickStart(newTenantKey(t), env.url, env.target+"/charges?from=hosted-quickstart", 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != "success" || res.Response.StatusCode != 200 || !strings.HasPrefix(res.IdempotentKey, "payment_") ||
		!strings.Contains(res.Response.Body, `"method": "POST"`) || res.Response.Headers["content-type"] != "application/json" {
		t.Fatalf("webhook result: %+v", res)
	}
}
