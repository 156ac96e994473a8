package devserver

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
)

const maxBody = 1 << 20

// call is one account-scoped API request being served.
type call struct {
	s       *Server
	r       *http.Request // path rewritten to the account-relative route
	now     time.Time
	body    []byte
	auth    *bearer
	version string
	rep     *reply
	err     error
}

// bearer is the authenticated identity of a request.
type bearer struct {
	kind   string // admin, product, license, user
	id     string // product, license or user id ("" for admin)
	viaKey bool   // Authorization: License <key>
	tok    *token // the token, when authenticated by one
}

// reply is a handler's successful answer.
type reply struct {
	status      int
	body        any // JSON value; []byte is written raw; nil means no body
	contentType string
	header      http.Header
}

type handlerFunc func(c *call) (*reply, error)

type ctxKey struct{}

func ok(v any) (*reply, error)      { return &reply{status: 200, body: v}, nil }
func created(v any) (*reply, error) { return &reply{status: 201, body: v}, nil }
func noContent() (*reply, error)    { return &reply{status: 204}, nil }

// handle registers h for an account-relative pattern such as
// "POST /machines/{id}/actions/ping".
func handle(mux *http.ServeMux, pattern string, h handlerFunc) {
	mux.HandleFunc(pattern, func(_ http.ResponseWriter, r *http.Request) {
		c := r.Context().Value(ctxKey{}).(*call)
		c.r = r
		c.rep, c.err = h(c)
	})
}

// apiVersion is the API version served (1.7 and 1.8 are equivalent for
// every route here).
const apiVersion = "1.8"

var apiVersionRe = regexp.MustCompile(`^1\.[0-8]$`)

var acceptSigRe = regexp.MustCompile(`^\s*(?:keyid="([^"]*)"\s*,\s*)?algorithm="([^"]*)"\s*$`)

// resolve maps a request path to its account-relative path and route key
// (the mux pattern, e.g. "POST /processes/{id}/actions/ping"; "GET /ping"
// for the ping route; "" when nothing matches). badAccount is the unknown
// account id, if any.
func (s *Server) resolve(r *http.Request) (rest, route, badAccount string) {
	path := r.URL.EscapedPath()
	if path == "/v1/ping" && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
		return "", "GET /ping", ""
	}
	tail, found := strings.CutPrefix(path, "/v1/accounts/")
	switch {
	case found:
		acct, t, _ := strings.Cut(tail, "/")
		if acct != s.account {
			return "", "", acct
		}
		rest = "/" + t
	case strings.HasPrefix(path, "/v1/"):
		rest = path[len("/v1"):]
	default:
		return "", "", ""
	}
	u := *r.URL
	u.RawPath = rest
	u.Path, _ = url.PathUnescape(rest)
	probe := &http.Request{Method: r.Method, URL: &u, Host: r.Host, Header: r.Header}
	_, route = s.mux.Handler(probe)
	return rest, route, ""
}

// ServeHTTP serves the Keygen API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.serveFaults(w, r) {
		return
	}
	rest, route, badAccount := s.resolve(r)
	f := s.currentFaults()
	if !f.applies(route) {
		f = Faults{}
	}
	if f.Refuse {
		s.count(route, true, false)
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				_ = conn.Close()
				return
			}
		}
		panic(http.ErrAbortHandler)
	}
	if f.Hang {
		s.count(route, true, false)
		select {
		case <-r.Context().Done():
		case <-s.done:
		}
		return
	}
	if f.Latency > 0 && !s.waitFor(r.Context(), f.Latency) {
		return
	}
	if !s.waitHold(r.Context(), route) {
		return
	}
	now := s.now()
	if f.RateLimitStorm {
		s.count(route, true, true)
		s.writeTooMany(w, now, s.rl.storm(now))
		return
	}
	if status, hit := s.drawServerError(route, f.ServerErrorRate); hit {
		s.count(route, true, false)
		writeRaw(w, status, jsonAPIType, errorBody(newError(status, "injected fault", ""), ""), nil)
		return
	}
	switch {
	case route == "GET /ping":
		s.count(route, false, false)
		w.WriteHeader(http.StatusOK)
		return
	case badAccount != "":
		s.count("", false, false)
		writeRaw(w, 404, jsonAPIType, errorBody(newError(404, "The requested account '"+badAccount+"' was not found", "NOT_FOUND"), ""), nil)
		return
	case rest == "":
		s.count("", false, false)
		writeRaw(w, 404, jsonAPIType, errorBody(notFound("endpoint"), ""), nil)
		return
	}

	reqID := newID()
	hdr := http.Header{}
	if !s.opts.DisableRateLimit && !s.rateExempt(r) {
		info, allowed := s.rl.hit(rateKey(r), now)
		if !allowed {
			s.count(route, false, true)
			s.writeTooMany(w, now, info)
			return
		}
		info.setHeaders(hdr)
	}

	sigAlg := algEd25519
	c := &call{s: s, now: now, version: apiVersion}
	var apiErr error
	if v := strings.TrimPrefix(r.Header.Get("Keygen-Version"), "v"); v != "" {
		if !apiVersionRe.MatchString(v) {
			apiErr = badRequest("unsupported API version requested", "INVALID_API_VERSION").header("Keygen-Version")
		} else {
			c.version = v
		}
	}
	if r.Header.Get("Keygen-Environment") != "" && apiErr == nil {
		apiErr = badRequest("environments are not supported by this server", "ENVIRONMENT_NOT_SUPPORTED").header("Keygen-Environment")
	}
	if h := r.Header.Get("Keygen-Accept-Signature"); h != "" && apiErr == nil {
		m := acceptSigRe.FindStringSubmatch(h)
		switch {
		case m == nil:
			apiErr = badRequest("invalid accept-signature header (malformed)", "HEADER_INVALID").header("Keygen-Accept-Signature")
		case !validSigningAlg(m[2]):
			apiErr = badRequest("invalid accept-signature header (unsupported algorithm)", "HEADER_INVALID").header("Keygen-Accept-Signature")
		case m[1] != "" && m[1] != s.account:
			apiErr = badRequest("invalid accept-signature header (keyid not found)", "HEADER_INVALID").header("Keygen-Accept-Signature")
		default:
			sigAlg = m[2]
		}
	}

	if apiErr == nil {
		body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
		switch {
		case err != nil:
			apiErr = badRequest("The request body could not be read", "BODY_INVALID")
		case len(body) > maxBody:
			apiErr = newError(413, "The request body is too large", "BODY_TOO_LARGE")
		default:
			c.body = body
		}
	}
	if apiErr == nil {
		u := *r.URL
		u.RawPath = rest
		u.Path, _ = url.PathUnescape(rest)
		if u.Path == "" {
			u.Path = "/"
		}
		r2 := r.WithContext(context.WithValue(r.Context(), ctxKey{}, c))
		r2.URL = &u
		if route == "" {
			apiErr = newError(404, "The requested endpoint was not found (check your HTTP method, Accept header, and URL path)", "NOT_FOUND")
		} else {
			apiErr = s.dispatch(c, r, r2)
		}
	}
	s.count(route, false, false)

	var (
		status int
		body   []byte
		ctype  = jsonAPIType
	)
	if apiErr != nil {
		ae, isAPI := apiErr.(*apiError)
		if !isAPI {
			s.log.Error("handler", "route", route, "err", apiErr)
			ae = newError(500, "an unexpected error occurred", "")
		}
		status, body = ae.Status, errorBody(ae, reqID)
		for k, v := range ae.Header {
			hdr[k] = v
		}
	} else {
		rep := c.rep
		status = rep.status
		switch b := rep.body.(type) {
		case nil:
		case []byte:
			body = b
		default:
			var err error
			body, err = json.Marshal(b)
			if err != nil {
				s.log.Error("encode response", "route", route, "err", err)
				status, body = 500, errorBody(newError(500, "an unexpected error occurred", ""), reqID)
			}
		}
		if rep.contentType != "" {
			ctype = rep.contentType
		}
		for k, v := range rep.header {
			hdr[k] = v
		}
	}
	if body == nil {
		ctype = ""
	}
	hdr.Set("Keygen-Account", s.account)
	hdr.Set("Keygen-Version", c.version)
	hdr.Set("Keygen-Edition", "CE")
	hdr.Set("Keygen-Mode", "singleplayer")
	hdr.Set("X-Request-Id", reqID)
	hdr.Set("Cache-Control", "no-transform, no-store, max-age=0")
	if c.auth != nil {
		// Keygen-Bearer carries the bearer's id (Current.bearer.id in
		// keygen-api); the admin bearer here is the account's own user.
		id := c.auth.id
		if id == "" {
			id = s.account
		}
		hdr.Set("Keygen-Bearer", id)
	}
	if loc := hdr.Get("Location"); strings.HasPrefix(loc, "/") {
		// Rails' *_url helpers: an absolute URL on the request's host.
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		hdr.Set("Location", scheme+"://"+r.Host+loc)
	}
	s.signResponse(hdr, r, sigAlg, body, now, f)
	s.log.Debug("request", "method", r.Method, "route", route, "status", status, "bearer", hdr.Get("Keygen-Bearer"))
	if f.TruncateBody && len(body) > 0 {
		hdr.Set("Content-Length", strconv.Itoa(len(body)))
		body = body[:len(body)/2]
	}
	writeRaw(w, status, ctype, body, hdr)
}

// dispatch authenticates and runs the route's handler under s.mu. A
// handler panic is a bug: it is logged and answered with a 500 instead of
// taking the server (and its lock) down.
func (s *Server) dispatch(c *call, r, r2 *http.Request) (err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("handler panic", "method", r.Method, "panic", fmt.Sprint(p))
			err = newError(500, "an unexpected error occurred", "")
		}
	}()
	if c.auth, err = s.authenticate(r); err != nil {
		return err
	}
	s.mux.ServeHTTP(discardWriter{}, r2)
	if ae, ok := c.err.(*apiError); ok && ae == nil {
		c.err = nil // a typed nil from a handler
	}
	if c.err == nil && c.rep == nil {
		return newError(500, "an unexpected error occurred", "")
	}
	return c.err
}

// signResponse adds Date, Digest and Keygen-Signature (keygen-api app/controllers/concerns/signature_headers.rb).
func (s *Server) signResponse(h http.Header, r *http.Request, alg string, body []byte, now time.Time, f Faults) {
	date := now.Add(f.DateSkew).UTC().Format(http.TimeFormat)
	digest := bodyDigest(body)
	h.Set("Date", date)
	h.Set("Keygen-Date", date)
	h.Set("Digest", digest)
	h.Set("Keygen-Digest", digest)
	if f.NoSignature {
		return
	}
	target := r.RequestURI
	if target == "" || strings.Contains(target, "://") {
		target = r.URL.RequestURI()
	}
	host := hostOnly(r.Host)
	if s.opts.SignHostWithPort {
		host = strings.ToLower(r.Host)
	}
	ss := signingString(r.Method, target, host, date, digest)
	if f.BadSignature {
		ss += "\n"
	}
	sig := base64.StdEncoding.EncodeToString(s.keys.sign(alg, []byte(ss)))
	h.Set("Keygen-Signature", fmt.Sprintf(`keyid="%s", algorithm="%s", signature="%s", headers="(request-target) host date digest"`, s.account, alg, sig))
}

// hostOnly is Rails' request.host: the Host header without its port.
func hostOnly(h string) string {
	if host, _, err := net.SplitHostPort(h); err == nil {
		return strings.Trim(host, "[]")
	}
	return strings.Trim(h, "[]")
}

const jsonAPIType = "application/vnd.api+json; charset=utf-8"

func writeRaw(w http.ResponseWriter, status int, ctype string, body []byte, h http.Header) {
	for k, v := range h {
		w.Header()[k] = v
	}
	if ctype != "" {
		w.Header().Set("Content-Type", ctype)
	}
	if w.Header().Get("Content-Length") == "" {
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	}
	w.WriteHeader(status)
	if len(body) > 0 {
		_, _ = w.Write(body)
	}
}

func errorBody(e *apiError, reqID string) []byte {
	doc := map[string]any{"errors": []any{e.object()}}
	if reqID != "" {
		doc["meta"] = map[string]any{"id": reqID}
	}
	b, _ := json.Marshal(doc)
	return b
}

func (s *Server) writeTooMany(w http.ResponseWriter, now time.Time, info rateInfo) {
	h := http.Header{}
	info.setHeaders(h)
	retry := int(info.reset.Sub(now).Seconds() + 0.999)
	if retry < 1 {
		retry = 1
	}
	h.Set("Retry-After", strconv.Itoa(retry))
	e := newError(429, "Throttle limit has been reached for your IP address. Please see https://keygen.sh/docs/api/rate-limiting/ for more info.", "TOO_MANY_REQUESTS")
	writeRaw(w, 429, jsonAPIType, errorBody(e, ""), h)
}

func (s *Server) count(route string, fault, limited bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.Total++
	if route != "" {
		s.stats.Routes[route]++
	}
	if fault {
		s.stats.Faults++
	}
	if limited {
		s.stats.RateLimited++
	}
}

// credential extracts the raw credential of a request: scheme ("license",
// "token") and secret.
func credential(r *http.Request) (scheme, secret string) {
	if a := r.Header.Get("Authorization"); a != "" {
		kind, val, _ := strings.Cut(a, " ")
		val = strings.TrimSpace(val)
		switch strings.ToLower(kind) {
		case "license":
			return "license", val
		case "bearer", "token":
			return "token", val
		case "basic":
			raw, err := base64.StdEncoding.DecodeString(val)
			if err != nil {
				return "invalid", a
			}
			user, pass, _ := strings.Cut(string(raw), ":")
			switch user {
			case "license":
				return "license", pass
			case "token":
				return "token", pass
			}
			if pass == "" {
				return "token", user
			}
			return "invalid", a
		}
		return "invalid", a
	}
	q := r.URL.Query()
	if a := q.Get("auth"); a != "" {
		kind, val, _ := strings.Cut(a, ":")
		if kind == "license" || kind == "token" {
			return kind, val
		}
		return "invalid", a
	}
	if t := q.Get("token"); t != "" {
		return "token", t
	}
	return "", ""
}

func rateKey(r *http.Request) string {
	scheme, secret := credential(r)
	h := sha256.Sum256([]byte(scheme + ":" + secret))
	return hostOnly(r.RemoteAddr) + "/" + hex.EncodeToString(h[:8])
}

func (s *Server) rateExempt(r *http.Request) bool {
	if s.opts.RateLimitAdmin {
		return false
	}
	scheme, secret := credential(r)
	if scheme != "token" {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tokens[secret]
	return t != nil && t.Kind == "admin"
}

type discardWriter struct{}

func (discardWriter) Header() http.Header         { return http.Header{} }
func (discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (discardWriter) WriteHeader(int)             {}

// memWriter records a response for [Server.Transport].
type memWriter struct {
	h      http.Header
	status int
	buf    bytes.Buffer
}

func newMemWriter() *memWriter { return &memWriter{h: http.Header{}} }

func (m *memWriter) Header() http.Header { return m.h }
func (m *memWriter) Write(b []byte) (int, error) {
	if m.status == 0 {
		m.status = 200
	}
	return m.buf.Write(b)
}
func (m *memWriter) WriteHeader(code int) {
	if m.status == 0 {
		m.status = code
	}
}

func (m *memWriter) response(req *http.Request) *http.Response {
	if m.status == 0 {
		m.status = 200
	}
	body := m.buf.Bytes()
	cl := int64(len(body))
	var rc io.ReadCloser = io.NopCloser(bytes.NewReader(body))
	if v, err := strconv.ParseInt(m.h.Get("Content-Length"), 10, 64); err == nil && v > cl {
		cl = v
		rc = io.NopCloser(io.MultiReader(bytes.NewReader(body), errReader{io.ErrUnexpectedEOF}))
	}
	return &http.Response{
		Status:        fmt.Sprintf("%d %s", m.status, http.StatusText(m.status)),
		StatusCode:    m.status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        m.h,
		Body:          rc,
		ContentLength: cl,
		Request:       req,
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }
