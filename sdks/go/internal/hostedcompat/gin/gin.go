// Package gin is a stand-in for github.com/gin-gonic/gin, just enough of its surface for the
// hosted SDK's README examples and test-app to compile (and serve) in this dependency-free
// module. It is not a web framework.
package gin

import (
	"encoding/json"
	"net/http"
	"strings"
)

// H is a JSON object.
type H map[string]interface{}

// HandlerFunc handles one request.
type HandlerFunc func(*Context)

// Context is one request.
type Context struct {
	Writer  http.ResponseWriter
	Request *http.Request
	params  map[string]string
}

// JSON answers code with obj as JSON.
func (c *Context) JSON(code int, obj interface{}) {
	c.Writer.Header().Set("Content-Type", "application/json")
	c.Writer.WriteHeader(code)
	_ = json.NewEncoder(c.Writer).Encode(obj)
}

// BindJSON decodes the body into obj.
func (c *Context) BindJSON(obj interface{}) error {
	return json.NewDecoder(c.Request.Body).Decode(obj)
}

// Param is a path parameter (":name" or "*name" in the route).
func (c *Context) Param(key string) string { return c.params[key] }

// Engine routes requests.
type Engine struct {
	routes []route
}

type route struct {
	method, pattern string
	handler         HandlerFunc
}

// Mode names.
const ReleaseMode = "release"

// SetMode is accepted and ignored.
func SetMode(string) {}

// Default makes an Engine.
func Default() *Engine { return &Engine{} }

// POST adds a route.
func (e *Engine) POST(path string, h ...HandlerFunc) { e.add("POST", path, h) }

// GET adds a route.
func (e *Engine) GET(path string, h ...HandlerFunc) { e.add("GET", path, h) }

func (e *Engine) add(method, path string, hs []HandlerFunc) {
	for _, h := range hs {
		e.routes = append(e.routes, route{method, path, h})
	}
}

// ServeHTTP dispatches to the first matching route.
func (e *Engine) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	for _, rt := range e.routes {
		if rt.method != r.Method {
			continue
		}
		if params, ok := matchPath(rt.pattern, r.URL.Path); ok {
			rt.handler(&Context{Writer: w, Request: r, params: params})
			return
		}
	}
	http.NotFound(w, r)
}

func matchPath(pattern, path string) (map[string]string, bool) {
	params := map[string]string{}
	ps, xs := strings.Split(pattern, "/"), strings.Split(path, "/")
	for i, p := range ps {
		if strings.HasPrefix(p, "*") {
			params[p[1:]] = "/" + strings.Join(xs[i:], "/")
			return params, true
		}
		if i >= len(xs) {
			return nil, false
		}
		if strings.HasPrefix(p, ":") {
			params[p[1:]] = xs[i]
		} else if p != xs[i] {
			return nil, false
		}
	}
	return params, len(ps) == len(xs)
}

// Run serves on addr.
func (e *Engine) Run(addr string) error { return http.ListenAndServe(addr, e) }

// WrapH adapts an http.Handler.
func WrapH(h http.Handler) HandlerFunc {
	return func(c *Context) { h.ServeHTTP(c.Writer, c.Request) }
}
