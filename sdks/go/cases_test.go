package ezthrottle_test

// The shared SDK case suite (testdata/sdk-cases, format in its README.md): every case runs
// against the real server through this SDK's idiomatic calls. The directory is
// ../../testdata/sdk-cases unless EZT_SDK_CASES_DIR says otherwise; a missing directory, an
// unknown op, argument or expectation key, or an unmatched expectation fails — nothing is
// skipped.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	ezthrottle "github.com/ezthrottle/ezthrottle/sdks/go"
)

func casesDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("EZT_SDK_CASES_DIR")
	if dir == "" {
		dir = filepath.Join("..", "..", "testdata", "sdk-cases")
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		t.Fatalf("the shared case suite is not at %s (set EZT_SDK_CASES_DIR): %v", dir, err)
	}
	return dir
}

type caseFile struct {
	Cases []struct {
		Name  string `json:"name"`
		About string `json:"about"`
		Steps []step `json:"steps"`
	} `json:"cases"`
}

type step struct {
	Op     string            `json:"op"`
	Args   map[string]any    `json:"args"`
	Expect map[string]any    `json:"expect"`
	Save   map[string]string `json:"save"`
	Client map[string]any    `json:"client"`
}

func TestSharedCases(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(casesDir(t), "cases.json"))
	if err != nil {
		t.Fatal(err)
	}
	var file caseFile
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.UseNumber()
	if err := dec.Decode(&file); err != nil {
		t.Fatalf("cases.json: %v", err)
	}
	if len(file.Cases) == 0 {
		t.Fatal("cases.json has no cases")
	}
	for _, c := range file.Cases {
		c := c // Go < 1.22: one variable per iteration for the parallel subtests
		t.Run(c.Name, func(t *testing.T) {
			t.Parallel() // each case has its own ${run} token: no two share a key or a URL
			vars := map[string]any{"target": env.target, "run": runToken()}
			for i, s := range c.Steps {
				if err := runStep(s, vars); err != nil {
					t.Logf("FAIL %s", c.Name)
					t.Fatalf("step %d (%s): %v", i+1, s.Op, err)
				}
			}
			t.Logf("ok %s", c.Name)
		})
	}
}

func runToken() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// ---------------------------------------------------------------------------- placeholders

var placeholder = regexp.MustCompile(`\$\{([^}]*)\}`)

func lookup(name string, vars map[string]any) (any, error) {
	if name == "now_ms" {
		return time.Now().UnixMilli(), nil
	}
	if strings.HasPrefix(name, "now_ms+") {
		n, err := strconv.ParseInt(name[len("now_ms+"):], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("bad placeholder ${%s}", name)
		}
		return time.Now().UnixMilli() + n, nil
	}
	v, ok := vars[name]
	if !ok {
		return nil, fmt.Errorf("unknown placeholder ${%s}", name)
	}
	return v, nil
}

func substitute(v any, vars map[string]any) (any, error) {
	switch x := v.(type) {
	case string:
		if m := placeholder.FindStringSubmatch(x); m != nil && m[0] == x {
			val, err := lookup(m[1], vars)
			if err != nil {
				return nil, err
			}
			switch val.(type) {
			case int64, float64, json.Number:
				return val, nil
			}
			return fmt.Sprint(val), nil
		}
		var firstErr error
		out := placeholder.ReplaceAllStringFunc(x, func(p string) string {
			val, err := lookup(p[2:len(p)-1], vars)
			if err != nil && firstErr == nil {
				firstErr = err
			}
			return fmt.Sprint(val)
		})
		return out, firstErr
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			s, err := substitute(e, vars)
			if err != nil {
				return nil, err
			}
			out[k] = s
		}
		return out, nil
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			s, err := substitute(e, vars)
			if err != nil {
				return nil, err
			}
			out[i] = s
		}
		return out, nil
	}
	return v, nil
}

// ---------------------------------------------------------------------------- one step

type outcome struct {
	result any // JSON-shaped (map[string]any …)
	status int // HTTP status where the op has one
	err    error
}

func runStep(s step, vars map[string]any) error {
	argsAny, err := substitute(s.Args, vars)
	if err != nil {
		return err
	}
	args, _ := argsAny.(map[string]any)
	if args == nil {
		args = map[string]any{}
	}
	expAny, err := substitute(s.Expect, vars)
	if err != nil {
		return err
	}
	expect, _ := expAny.(map[string]any)

	client, err := stepClient(s.Client)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := perform(ctx, client, s.Op, args)
	if err != nil {
		return err // a bad op or argument: the case is wrong for this runner
	}
	if err := check(expect, out); err != nil {
		return err
	}
	for name, path := range s.Save {
		if out.err != nil {
			return fmt.Errorf("save %s: the step failed: %v", name, out.err)
		}
		v, err := at(out.result, path)
		if err != nil {
			return fmt.Errorf("save %s: %v", name, err)
		}
		vars[name] = v
	}
	return nil
}

func stepClient(settings map[string]any) (*ezthrottle.Client, error) {
	key := env.key
	for k, v := range settings {
		switch k {
		case "api_key":
			key = fmt.Sprint(v)
		default:
			return nil, fmt.Errorf("unknown client setting %q", k)
		}
	}
	return ezthrottle.NewClient(key, ezthrottle.WithBaseURL(env.url)), nil
}

// argReader takes arguments out one by one, so leftovers (unknown arguments) are an error.
type argReader struct {
	m   map[string]any
	err error
}

func (a *argReader) take(k string) (any, bool) {
	v, ok := a.m[k]
	delete(a.m, k)
	return v, ok
}

func (a *argReader) str(k string) string {
	v, ok := a.take(k)
	if !ok {
		return ""
	}
	s, isStr := v.(string)
	if !isStr && a.err == nil {
		a.err = fmt.Errorf("argument %s: want a string, got %T", k, v)
	}
	return s
}

func (a *argReader) num(k string) (float64, bool) {
	v, ok := a.take(k)
	if !ok {
		return 0, false
	}
	f, err := toFloat(v)
	if err != nil && a.err == nil {
		a.err = fmt.Errorf("argument %s: %v", k, err)
	}
	return f, true
}

func (a *argReader) ints(k string) []int {
	v, ok := a.take(k)
	if !ok {
		return nil
	}
	list, isList := v.([]any)
	if !isList {
		a.err = fmt.Errorf("argument %s: want a list", k)
		return nil
	}
	out := make([]int, 0, len(list))
	for _, e := range list {
		f, err := toFloat(e)
		if err != nil {
			a.err = fmt.Errorf("argument %s: %v", k, err)
		}
		out = append(out, int(f))
	}
	return out
}

func (a *argReader) strMap(k string) map[string]string {
	v, ok := a.take(k)
	if !ok {
		return nil
	}
	m, isMap := v.(map[string]any)
	if !isMap {
		a.err = fmt.Errorf("argument %s: want an object", k)
		return nil
	}
	out := make(map[string]string, len(m))
	for kk, vv := range m {
		out[kk] = fmt.Sprint(vv)
	}
	return out
}

func (a *argReader) strs(k string) []string {
	v, ok := a.take(k)
	if !ok {
		return nil
	}
	list, isList := v.([]any)
	if !isList {
		a.err = fmt.Errorf("argument %s: want a list", k)
		return nil
	}
	out := make([]string, len(list))
	for i, e := range list {
		out[i] = fmt.Sprint(e)
	}
	return out
}

func (a *argReader) done() error {
	if a.err != nil {
		return a.err
	}
	if len(a.m) > 0 {
		keys := make([]string, 0, len(a.m))
		for k := range a.m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		return fmt.Errorf("unknown arguments %v", keys)
	}
	return nil
}

func toFloat(v any) (float64, error) {
	switch x := v.(type) {
	case json.Number:
		return x.Float64()
	case float64:
		return x, nil
	case int64:
		return float64(x), nil
	case int:
		return float64(x), nil
	}
	return 0, fmt.Errorf("want a number, got %T", v)
}

func webhooksArg(a *argReader, k string) []ezthrottle.Webhook {
	v, ok := a.take(k)
	if !ok {
		return nil
	}
	list, isList := v.([]any)
	if !isList {
		a.err = fmt.Errorf("argument %s: want a list", k)
		return nil
	}
	var out []ezthrottle.Webhook
	for _, e := range list {
		m, _ := e.(map[string]any)
		w := &argReader{m: copyMap(m)}
		hook := ezthrottle.Webhook{URL: w.str("url"), Regions: w.strs("regions")}
		for _, name := range []string{"has_quorum_vote", "hasQuorumVote"} {
			if vote, ok := w.take(name); ok {
				if b, _ := vote.(bool); b {
					hook.HasQuorumVote = true
				} else {
					hook.NoVote = true
				}
			}
		}
		if err := w.done(); err != nil {
			a.err = fmt.Errorf("argument %s: %v", k, err)
		}
		out = append(out, hook)
	}
	return out
}

func copyMap(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// jobSpec maps the native job fields of the case suite onto JobSpec.
func jobSpec(m map[string]any) (ezthrottle.JobSpec, *argReader) {
	a := &argReader{m: copyMap(m)}
	spec := ezthrottle.JobSpec{
		URL:           a.str("url"),
		Method:        a.str("method"),
		Headers:       a.strMap("headers"),
		Body:          a.str("body"),
		Metadata:      a.strMap("metadata"),
		Webhooks:      webhooksArg(a, "webhooks"),
		Regions:       a.strs("regions"),
		RegionPolicy:  a.str("region_policy"),
		ExecutionMode: a.str("execution_mode"),
		IdempotentKey: a.str("idempotent_key"),
	}
	if q, ok := a.num("webhook_quorum"); ok {
		spec.WebhookQuorum = ezthrottle.Int(int(q))
	}
	if at, ok := a.num("retry_at"); ok {
		spec.RetryAt = int64(at)
	}
	if v, ok := a.take("timeout"); ok {
		switch x := v.(type) {
		case string:
			d, err := time.ParseDuration(x)
			if err != nil {
				a.err = fmt.Errorf("argument timeout: %v", err)
			}
			spec.Timeout = d
		default:
			f, err := toFloat(x)
			if err != nil {
				a.err = fmt.Errorf("argument timeout: %v", err)
			}
			spec.Timeout = time.Duration(f * float64(time.Second))
		}
	}
	if v, ok := a.take("retry_policy"); ok {
		m, _ := v.(map[string]any)
		r := &argReader{m: copyMap(m)}
		p := &ezthrottle.JobRetryPolicy{RetryCodes: r.ints("retry_codes"), RerouteCodes: r.ints("reroute_codes")}
		if n, ok := r.num("max_retries"); ok {
			p.MaxRetries = ezthrottle.Int(int(n))
		}
		if n, ok := r.num("max_reroutes"); ok {
			p.MaxReroutes = ezthrottle.Int(int(n))
		}
		if err := r.done(); err != nil && a.err == nil {
			a.err = fmt.Errorf("argument retry_policy: %v", err)
		}
		spec.RetryPolicy = p
	}
	return spec, a
}

// asJSON turns raw answer bytes into the generic JSON shape for matching.
func asJSON(raw []byte) (any, error) {
	if len(raw) == 0 {
		return nil, nil
	}
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("the result is not JSON: %v (%q)", err, raw)
	}
	return v, nil
}

func viaJSON(v any) (any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return asJSON(b)
}

func perform(ctx context.Context, c *ezthrottle.Client, op string, args map[string]any) (outcome, error) {
	switch op {
	case "submit":
		spec, a := jobSpec(args)
		var opts []ezthrottle.SubmitOption
		if w, ok := a.num("wait"); ok {
			opts = append(opts, ezthrottle.SubmitWait(time.Duration(w*float64(time.Second))))
		}
		if err := a.done(); err != nil {
			return outcome{}, err
		}
		sub, err := c.Submit(ctx, spec, opts...)
		if err != nil {
			return outcome{err: err}, nil
		}
		r, err := asJSON(sub.Raw)
		return outcome{result: r, status: sub.HTTPStatus}, err
	case "get", "wait", "cancel", "retry", "events":
		a := &argReader{m: copyMap(args)}
		id := a.str("job_id")
		var timeout float64
		if op == "wait" {
			timeout, _ = a.num("timeout_s")
		}
		if err := a.done(); err != nil {
			return outcome{}, err
		}
		var job *ezthrottle.Job
		var err error
		switch op {
		case "get":
			job, err = c.Get(ctx, id)
		case "wait":
			job, err = c.Wait(ctx, id, time.Duration(timeout*float64(time.Second)))
		case "cancel":
			job, err = c.Cancel(ctx, id)
		case "retry":
			job, err = c.Retry(ctx, id)
		case "events":
			return events(ctx, c, id)
		}
		if err != nil {
			return outcome{err: err}, nil
		}
		r, err := asJSON(job.Raw)
		return outcome{result: r}, err
	case "batch":
		a := &argReader{m: copyMap(args)}
		v, _ := a.take("jobs")
		if err := a.done(); err != nil {
			return outcome{}, err
		}
		list, ok := v.([]any)
		if !ok {
			return outcome{}, fmt.Errorf("argument jobs: want a list")
		}
		specs := make([]ezthrottle.JobSpec, len(list))
		for i, e := range list {
			m, _ := e.(map[string]any)
			spec, ja := jobSpec(m)
			if err := ja.done(); err != nil {
				return outcome{}, fmt.Errorf("jobs.%d: %v", i, err)
			}
			specs[i] = spec
		}
		res, err := c.Batch(ctx, specs)
		if err != nil {
			return outcome{err: err}, nil
		}
		results := make([]any, len(res))
		for i, r := range res {
			if results[i], err = asJSON(r.Raw); err != nil {
				return outcome{}, err
			}
		}
		return outcome{result: map[string]any{"results": results}}, nil
	case "raw":
		a := &argReader{m: copyMap(args)}
		method, path := a.str("method"), a.str("path")
		headers := a.strMap("headers")
		body, hasBody := a.take("body")
		if err := a.done(); err != nil {
			return outcome{}, err
		}
		var data []byte
		if hasBody {
			if s, ok := body.(string); ok {
				data = []byte(s)
			} else {
				var err error
				if data, err = json.Marshal(body); err != nil {
					return outcome{}, err
				}
			}
		}
		status, answer, err := c.Raw(ctx, method, path, headers, data)
		if err != nil {
			return outcome{err: err}, nil
		}
		parsed, perr := asJSON(answer)
		if perr != nil {
			parsed = nil
		}
		return outcome{result: map[string]any{"status": status, "json": parsed}, status: status}, nil
	case "hosted_step":
		return hostedStep(ctx, c, args)
	}
	return outcome{}, fmt.Errorf("unknown op %q", op)
}

func events(ctx context.Context, c *ezthrottle.Client, id string) (outcome, error) {
	stream, err := c.Events(ctx, id)
	if err != nil {
		return outcome{err: err}, nil
	}
	defer stream.Close()
	names := []any{}
	for {
		ev, err := stream.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return outcome{err: err}, nil
		}
		if ev.Type != "position" {
			names = append(names, ev.Type)
		}
	}
	return outcome{result: map[string]any{"events": names}}, nil
}

func hostedStep(ctx context.Context, c *ezthrottle.Client, args map[string]any) (outcome, error) {
	a := &argReader{m: copyMap(args)}
	s := ezthrottle.NewStep(c).URL(a.str("url"))
	if m := a.str("method"); m != "" {
		s.Method(m)
	}
	if h := a.strMap("headers"); h != nil {
		s.Headers(h)
	}
	if b := a.str("body"); b != "" {
		s.Body(b)
	}
	if m, ok := a.take("metadata"); ok {
		mm, _ := m.(map[string]any)
		s.Metadata(mm)
	}
	switch t := a.str("type"); t {
	case "performance":
		s.Type(ezthrottle.StepTypePerformance)
	case "frugal":
		s.Type(ezthrottle.StepTypeFrugal)
	case "":
	default:
		return outcome{}, fmt.Errorf("argument type: unknown step type %q", t)
	}
	switch st := a.str("idempotent_strategy"); st {
	case "hash":
		s.IdempotentStrategy(ezthrottle.IdempotentStrategyHash)
	case "unique":
		s.IdempotentStrategy(ezthrottle.IdempotentStrategyUnique)
	case "":
	default:
		return outcome{}, fmt.Errorf("argument idempotent_strategy: unknown %q", st)
	}
	if k := a.str("idempotent_key"); k != "" {
		s.IdempotentKey(k)
	}
	if w := webhooksArg(a, "webhooks"); w != nil {
		s.Webhooks(w)
	}
	if r := a.strs("regions"); r != nil {
		s.Regions(r)
	}
	if codes := a.ints("fallback_on_error"); codes != nil {
		s.FallbackOnError(codes)
	}
	if v, ok := a.take("retry"); ok {
		m, _ := v.(map[string]any)
		r := &argReader{m: copyMap(m)}
		p := &ezthrottle.RetryPolicy{RetryCodes: r.ints("retry_codes"), RerouteCodes: r.ints("reroute_codes")}
		if n, ok := r.num("max_retries"); ok {
			p.MaxRetries = int(n)
		}
		if n, ok := r.num("max_reroutes"); ok {
			p.MaxReroutes = int(n)
		}
		if err := r.done(); err != nil {
			return outcome{}, fmt.Errorf("argument retry: %v", err)
		}
		s.RetryPolicy(p)
	}
	if err := a.done(); err != nil {
		return outcome{}, err
	}
	q, err := s.Execute(ctx)
	if err != nil && (q == nil || !q.ExecutedLocally) {
		return outcome{err: err}, nil
	}
	// A FRUGAL local failure is an error, as in the hosted Go SDK, and comes with the hosted
	// local-failure result, which is what the suite compares.
	r, err := viaJSON(q)
	return outcome{result: r, status: q.ForwardedStatus}, err
}

// ---------------------------------------------------------------------------- expectations

func check(expect map[string]any, out outcome) error {
	known := map[string]bool{"ok": true, "error": true, "json": true, "status": true}
	for k := range expect {
		if !known[k] {
			return fmt.Errorf("unknown expect key %q", k)
		}
	}
	wantOK := true
	if v, ok := expect["ok"]; ok {
		b, isBool := v.(bool)
		if !isBool {
			return fmt.Errorf("expect.ok is not a boolean")
		}
		wantOK = b
	} else if _, hasErr := expect["error"]; hasErr {
		wantOK = false
	}
	if !wantOK {
		if out.err == nil {
			return fmt.Errorf("expected a typed error, the call returned %v", compact(out.result))
		}
		var e *ezthrottle.EZThrottleError
		if !errors.As(out.err, &e) {
			return fmt.Errorf("expected *EZThrottleError, got %T: %v", out.err, out.err)
		}
		if want, ok := expect["error"].(map[string]any); ok {
			got := map[string]any{"status": e.Status, "code": e.Code, "field": e.Field}
			for k := range want {
				if k != "status" && k != "code" && k != "field" {
					return fmt.Errorf("unknown expect.error key %q", k)
				}
			}
			if err := match(want, got, "error"); err != nil {
				return fmt.Errorf("%v (error: %v)", err, out.err)
			}
		}
		return nil
	}
	if out.err != nil {
		return fmt.Errorf("the call failed: %v", out.err)
	}
	if want, ok := expect["status"]; ok {
		if err := match(want, out.status, "status"); err != nil {
			return err
		}
	}
	if want, ok := expect["json"]; ok {
		got := out.result
		if m, isMap := got.(map[string]any); isMap {
			if _, isRaw := m["json"]; isRaw && len(m) == 2 {
				if _, hasStatus := m["status"]; hasStatus {
					got = m["json"] // raw: json matches the body part
				}
			}
		}
		if err := match(want, got, "json"); err != nil {
			return fmt.Errorf("%v\n  result: %s", err, compact(out.result))
		}
	}
	return nil
}

func compact(v any) string {
	b, _ := json.Marshal(v)
	return truncateStr(string(b), 1500)
}

func truncateStr(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func match(want, got any, path string) error {
	switch w := want.(type) {
	case string:
		switch {
		case w == "<any>":
			return nil
		case w == "<string>":
			if _, ok := got.(string); !ok {
				return fmt.Errorf("%s: want a string, got %v", path, compact(got))
			}
			return nil
		case w == "<number>":
			if _, err := toFloat(got); err != nil {
				return fmt.Errorf("%s: want a number, got %v", path, compact(got))
			}
			return nil
		case strings.HasPrefix(w, "<prefix:") && strings.HasSuffix(w, ">"):
			s, ok := got.(string)
			if p := w[len("<prefix:") : len(w)-1]; !ok || !strings.HasPrefix(s, p) {
				return fmt.Errorf("%s: want a string starting with %q, got %v", path, p, compact(got))
			}
			return nil
		}
		if s, ok := got.(string); !ok || s != w {
			return fmt.Errorf("%s: want %q, got %v", path, w, compact(got))
		}
		return nil
	case json.Number, float64, int64, int:
		wf, _ := toFloat(w)
		gf, err := toFloat(got)
		if err != nil || math.Abs(wf-gf) > 1e-9 {
			return fmt.Errorf("%s: want %v, got %v", path, w, compact(got))
		}
		return nil
	case bool:
		if g, ok := got.(bool); !ok || g != w {
			return fmt.Errorf("%s: want %v, got %v", path, w, compact(got))
		}
		return nil
	case nil:
		if got != nil {
			return fmt.Errorf("%s: want null, got %v", path, compact(got))
		}
		return nil
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return fmt.Errorf("%s: want an object, got %v", path, compact(got))
		}
		for k, wv := range w {
			gv, present := g[k]
			if !present {
				if wv == "<any>" {
					return fmt.Errorf("%s.%s: missing", path, k)
				}
				return fmt.Errorf("%s.%s: missing (want %v)", path, k, compact(wv))
			}
			if err := match(wv, gv, path+"."+k); err != nil {
				return err
			}
		}
		return nil
	case []any:
		g, ok := got.([]any)
		if !ok {
			return fmt.Errorf("%s: want a list, got %v", path, compact(got))
		}
		if len(g) != len(w) {
			return fmt.Errorf("%s: want %d elements, got %d: %v", path, len(w), len(g), compact(got))
		}
		for i := range w {
			if err := match(w[i], g[i], fmt.Sprintf("%s.%d", path, i)); err != nil {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("%s: cannot match an expectation of type %T", path, want)
}

// at reads a dotted path ("results.2.job_id") out of a JSON-shaped value.
func at(v any, path string) (any, error) {
	cur := v
	for _, seg := range strings.Split(path, ".") {
		switch x := cur.(type) {
		case map[string]any:
			next, ok := x[seg]
			if !ok {
				return nil, fmt.Errorf("no %q in %s", seg, compact(cur))
			}
			cur = next
		case []any:
			i, err := strconv.Atoi(seg)
			if err != nil || i < 0 || i >= len(x) {
				return nil, fmt.Errorf("bad index %q into a list of %d", seg, len(x))
			}
			cur = x[i]
		default:
			return nil, fmt.Errorf("cannot take %q of %s", seg, compact(cur))
		}
	}
	if n, ok := cur.(json.Number); ok {
		return n, nil
	}
	return cur, nil
}

// ---------------------------------------------------------------------------- verify vectors

func TestSharedVerifyVectors(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(casesDir(t), "verify-vectors.json"))
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		DefaultTolerance int `json:"default_tolerance_s"`
		Vectors          []struct {
			Name            string  `json:"name"`
			Fn              string  `json:"fn"`
			Body            string  `json:"body"`
			Header          string  `json:"header"`
			Secret          string  `json:"secret"`
			PrimarySecret   string  `json:"primary_secret"`
			SecondarySecret *string `json:"secondary_secret"`
			Now             int64   `json:"now"`
			Tolerance       *int    `json:"tolerance"`
			Valid           bool    `json:"valid"`
			Reason          string  `json:"reason"`
			ReasonPrefix    string  `json:"reason_prefix"`
			Code            string  `json:"code"`
		} `json:"vectors"`
	}
	if err := json.Unmarshal(raw, &file); err != nil {
		t.Fatal(err)
	}
	if len(file.Vectors) == 0 || file.DefaultTolerance == 0 {
		t.Fatal("verify-vectors.json has no vectors or no default tolerance")
	}
	for i, v := range file.Vectors {
		tol := file.DefaultTolerance
		if v.Tolerance != nil {
			tol = *v.Tolerance
		}
		now := time.Unix(v.Now, 0)
		var got ezthrottle.VerificationResult
		switch v.Fn {
		case "verify_webhook_signature":
			got = ezthrottle.VerifyWebhookSignatureAt([]byte(v.Body), v.Header, v.Secret, tol, now)
		case "try_verify_with_secrets":
			secondary := ""
			if v.SecondarySecret != nil {
				secondary = *v.SecondarySecret
			}
			got = ezthrottle.TryVerifyWithSecretsAt([]byte(v.Body), v.Header, v.PrimarySecret, secondary, tol, now)
		default:
			t.Errorf("vector %d (%s): unknown fn %q", i, v.Name, v.Fn)
			continue
		}
		reasonOK := got.Reason == v.Reason
		if v.ReasonPrefix != "" {
			reasonOK = v.Reason == "" && strings.HasPrefix(got.Reason, v.ReasonPrefix)
		}
		if got.Verified != v.Valid || !reasonOK || got.Code != v.Code {
			t.Errorf("vector %d (%s %s): got (%v, %q, code %q), want (%v, %q%s, code %q)", i, v.Fn, v.Name,
				got.Verified, got.Reason, got.Code, v.Valid, v.Reason, v.ReasonPrefix, v.Code)
		}
	}
}
