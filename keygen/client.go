package keygen

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"time"

	"github.com/keygen-agent/keygen-agent/internal/version"
)

// DefaultBaseURL is Keygen Cloud.
const DefaultBaseURL = "https://api.keygen.sh"

// DefaultAPIVersion is the Keygen-Version the client pins by default.
const DefaultAPIVersion = "1.7"

// maxBody bounds how much of a response the client reads.
const maxBody = 8 << 20

// Config configures a [Client]. Only Account is required.
type Config struct {
	BaseURL     string // default DefaultBaseURL; requests go to BaseURL+"/v1/accounts/{Account}/..."
	Account     string // account id or slug (required)
	Environment string // optional Keygen-Environment
	APIVersion  string // Keygen-Version, default DefaultAPIVersion
	LicenseKey  string // Authorization: License <key>
	Token       string // Authorization: Bearer <token> (wins if both are set)
	// PublicKey is the account's Ed25519 key (hex, base64 SPKI DER or PEM).
	// When set, every response other than 429/5xx must be signed by it.
	// "" disables response verification.
	PublicKey string
	// RSAPublicKey and ECDSAPublicKey (SPKI PEM) are only needed for
	// rsa-* and ecdsa-p256 certificates; see [Client.PublicKeys].
	RSAPublicKey, ECDSAPublicKey string
	// UserAgent is an optional vendor prefix, e.g. "acme-cad/4.2", put
	// before the agent's own product token: the header reads
	// "[prefix ]keygen-agent/<AgentVersion> go/<ver> <os>/<arch>". The
	// agent itself sets no prefix: its own name belongs in the product
	// token that follows, not here.
	UserAgent string
	// AgentVersion is the agent's version in the User-Agent; default
	// version.Get (internal/version).
	AgentVersion string
	// HTTPClient defaults to one with a 10s dial and 30s overall timeout
	// and the proxy from the environment. Redirects are never followed.
	HTTPClient *http.Client
	// MaxClockDrift is the replay window for a response's signed Date:
	// older responses are rejected. Default 5m; <0 disables the check.
	MaxClockDrift time.Duration
	// Now is the local clock (default time.Now). It times the exchange of a
	// nonce-bound validation ([Validation.Sent], [Validation.Received]).
	Now func() time.Time
	// TrustedNow is the clock a response's signed Date is checked against
	// (the replay window) and rate-limit resets are measured on; default
	// Now. A caller that learned Keygen's clock offset from a nonce-bound
	// validation passes the corrected clock here, so that a wrong local
	// clock does not make every answer look replayed (see clock.go).
	TrustedNow func() time.Time
	// OnResponse, if set, is called for every HTTP response received (after
	// verification), from the calling goroutine. It must not block.
	OnResponse func(ResponseInfo)
	// BeforeRequest, if set, is called before every HTTP request is sent,
	// including each page of a list, with the request's context. It may
	// block (a request budget); an error aborts the call and is returned
	// as is.
	BeforeRequest func(ctx context.Context, method, path string) error
}

// ResponseInfo describes one HTTP response from Keygen.
type ResponseInfo struct {
	Method, Path string // Path is the request URI as sent
	Status       int
	Date         time.Time // the verified signed Date; zero unless Verified
	Verified     bool
	// NonceBound: the answer is bound to its request by a nonce (a license
	// validation), so its Date was not checked against the local clock; the
	// caller trusts it only once the nonce matched (Validation.Date).
	NonceBound bool
	RateLimit  RateLimit
	RequestID  string
}

// Client is a Keygen API client. It is immutable and safe for concurrent
// use; copies made with [Client.WithLicenseKey] share its transport.
type Client struct {
	base       string // scheme://host[/prefix]/v1/accounts/{account}
	root       string // scheme://host[/prefix]/v1
	env        string
	version    string
	auth       string
	ua         string
	hc         *http.Client
	keys       PublicKeys
	verify     bool
	drift      time.Duration
	now        func() time.Time
	trusted    func() time.Time
	onResponse func(ResponseInfo)
	before     func(ctx context.Context, method, path string) error
}

// NewClient validates cfg and returns a client.
func NewClient(cfg Config) (*Client, error) {
	if strings.TrimSpace(cfg.Account) == "" {
		return nil, errors.New("keygen: config: account is required")
	}
	base := cfg.BaseURL
	if base == "" {
		base = DefaultBaseURL
	}
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("keygen: config: base URL %q must be an absolute http(s) URL", base)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("keygen: config: base URL %q must not have a query or fragment", base)
	}
	root := strings.TrimRight(u.String(), "/") + "/v1"
	keys, err := ParsePublicKeys(cfg.PublicKey, cfg.RSAPublicKey, cfg.ECDSAPublicKey)
	if err != nil {
		return nil, fmt.Errorf("keygen: config: %w", err)
	}
	c := &Client{
		base:       root + "/accounts/" + url.PathEscape(cfg.Account),
		root:       root,
		env:        cfg.Environment,
		version:    strings.TrimPrefix(cfg.APIVersion, "v"),
		hc:         cfg.HTTPClient,
		keys:       keys,
		verify:     keys.Ed25519 != nil,
		drift:      cfg.MaxClockDrift,
		now:        cfg.Now,
		trusted:    cfg.TrustedNow,
		onResponse: cfg.OnResponse,
		before:     cfg.BeforeRequest,
	}
	if c.version == "" {
		c.version = DefaultAPIVersion
	}
	if c.drift == 0 {
		c.drift = 5 * time.Minute
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.trusted == nil {
		c.trusted = c.now
	}
	if c.hc == nil {
		c.hc = defaultHTTPClient()
	} else if c.hc.CheckRedirect == nil {
		// Keygen never redirects API calls; a redirect is a proxy or a
		// captive portal, and following it would resend credentials.
		hc := *c.hc
		hc.CheckRedirect = noRedirect
		c.hc = &hc
	}
	c.auth = authHeader(cfg.LicenseKey, cfg.Token)
	c.ua = userAgent(cfg.UserAgent, cfg.AgentVersion)
	return c, nil
}

func authHeader(key, token string) string {
	switch {
	case token != "":
		return "Bearer " + token
	case key != "":
		return "License " + key
	}
	return ""
}

func userAgent(prefix, ver string) string {
	if ver == "" {
		ver = version.Get()
	}
	ua := fmt.Sprintf("keygen-agent/%s go/%s %s/%s", ver, strings.TrimPrefix(runtime.Version(), "go"), runtime.GOOS, runtime.GOARCH)
	if prefix = strings.TrimSpace(prefix); prefix != "" {
		ua = prefix + " " + ua
	}
	return ua
}

func defaultHTTPClient() *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			ForceAttemptHTTP2:     true,
			MaxIdleConns:          16,
			MaxIdleConnsPerHost:   8,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: 20 * time.Second,
			ExpectContinueTimeout: time.Second,
		},
		CheckRedirect: noRedirect,
	}
}

func noRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// WithLicenseKey returns a copy of c that authenticates with key (and no
// bearer token). The copy shares c's transport.
func (c *Client) WithLicenseKey(key string) *Client {
	cp := *c
	cp.auth = authHeader(key, "")
	return &cp
}

// WithToken returns a copy of c that authenticates with a bearer token.
func (c *Client) WithToken(token string) *Client {
	cp := *c
	cp.auth = authHeader("", token)
	return &cp
}

// PublicKeys returns the keys parsed from the Config, for [OpenCertificate].
func (c *Client) PublicKeys() PublicKeys { return c.keys }

// request is one API call.
type request struct {
	method   string
	path     string     // below the account prefix, e.g. "/machines/x"; already escaped
	query    url.Values // optional
	body     any        // JSON-encoded when non-nil
	unsigned bool       // root-level route (no account): Keygen cannot sign it
	noAcct   bool       // path is below /v1, not below the account
	// anonymous drops authorization: validate-key needs none (the key in
	// the body is the credential), and a configured key or token Keygen
	// refuses (stale, expired, or not allowed by the policy's
	// authenticationStrategy: concerns/authentication.rb raises even on
	// the optional login of validate_by_key) would turn it into a 401/403.
	anonymous bool
	// nonceBound: the request carries a nonce its answer must echo (a
	// validation, validations_controller.rb), which proves the answer
	// fresh whatever the local clock says: its Date is not checked against
	// the replay window, and the caller checks the nonce.
	nonceBound bool
}

// response is a verified, successful answer.
type response struct {
	body   []byte
	info   ResponseInfo
	signed *SignedResponse // what the signature covers; see evidence.go
	// sent and received are local clock readings (Config.Now) around the
	// HTTP exchange, for a nonce-bound answer's clock offset.
	sent, received time.Time
}

// do sends r and returns a 2xx response, or a classified error.
func (c *Client) do(ctx context.Context, r request) (*response, error) {
	u := c.base + r.path
	if r.noAcct {
		u = c.root + r.path
	}
	if len(r.query) > 0 {
		u += "?" + r.query.Encode()
	}
	var body io.Reader
	if r.body != nil {
		b, err := json.Marshal(r.body)
		if err != nil {
			return nil, fmt.Errorf("keygen: encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, u, body)
	if err != nil {
		return nil, fmt.Errorf("keygen: build request: %w", err)
	}
	h := req.Header
	h.Set("Accept", "application/vnd.api+json")
	if body != nil {
		h.Set("Content-Type", "application/vnd.api+json")
	}
	h.Set("Keygen-Version", c.version)
	if c.env != "" {
		h.Set("Keygen-Environment", c.env)
	}
	if c.auth != "" && !r.anonymous {
		h.Set("Authorization", c.auth)
	}
	if c.verify && !r.unsigned {
		h.Set("Keygen-Accept-Signature", `algorithm="ed25519"`)
	}
	h.Set("User-Agent", c.ua)

	if c.before != nil {
		if err := c.before(ctx, r.method, r.path); err != nil {
			return nil, err
		}
	}
	sent := c.now()
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, &UnavailableError{Err: unwrapURLError(err)}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return nil, &UnavailableError{Status: resp.StatusCode, Err: fmt.Errorf("read body: %w", err)}
	}
	received := c.now()
	info := ResponseInfo{
		Method:    r.method,
		Path:      req.URL.RequestURI(),
		Status:    resp.StatusCode,
		RateLimit: parseRateLimit(resp.Header, c.trusted()),
		RequestID: resp.Header.Get("X-Request-Id"),
	}
	st := resp.StatusCode

	// Unsigned answers first: rate limiter and infrastructure errors.
	if st == http.StatusTooManyRequests || (st == http.StatusForbidden && strings.EqualFold(resp.Header.Get("X-RateLimit-Window"), "blacklist")) {
		c.report(info)
		rl := info.RateLimit
		switch now := c.trusted(); {
		case rl.RetryAfter > 0:
		case st == http.StatusForbidden: // blocklist ban: 30 minutes
			rl.RetryAfter = 30 * time.Minute
		case rl.Reset.After(now):
			rl.RetryAfter = rl.Reset.Sub(now)
		default:
			rl.RetryAfter = time.Second
		}
		return nil, &RateLimitError{RateLimit: rl, Status: st}
	}
	if st >= 500 {
		c.report(info)
		return nil, &UnavailableError{Status: st}
	}
	if len(raw) > maxBody {
		c.report(info)
		return nil, malformed("response body larger than %d bytes", maxBody)
	}

	if c.verify && !r.unsigned {
		date, err := c.verifyResponse(req, resp.Header, raw, r.nonceBound)
		if err != nil {
			var de *DateError
			if errors.As(err, &de) {
				de.Status = st
			}
			c.report(info)
			if st >= 400 {
				// Not trusted, but say what it claimed: an unsigned 404 is
				// typically a wrong account id.
				return nil, fmt.Errorf("%w (untrusted answer: %v)", err, decodeAPIError(st, raw, info.RequestID))
			}
			return nil, err
		}
		info.Date, info.Verified, info.NonceBound = date, true, r.nonceBound
	}
	c.report(info)

	switch {
	case st >= 200 && st < 300:
		return &response{body: raw, info: info, signed: signedResponse(req, resp.Header, raw, info), sent: sent, received: received}, nil
	case st >= 400:
		return nil, decodeAPIError(st, raw, info.RequestID)
	default:
		return nil, malformed("unexpected HTTP status %d", st)
	}
}

func (c *Client) report(info ResponseInfo) {
	if c.onResponse != nil {
		c.onResponse(info)
	}
}

// unwrapURLError drops *url.Error, whose message repeats the full URL.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s: %w", strings.ToLower(ue.Op), ue.Err)
	}
	return err
}

func httpStatusTitle(status int) string {
	if t := http.StatusText(status); t != "" {
		return t
	}
	return fmt.Sprintf("HTTP %d", status)
}

// doc runs r and decodes the JSON:API document of the response.
func (c *Client) doc(ctx context.Context, r request) (*document, error) {
	resp, err := c.do(ctx, r)
	if err != nil {
		return nil, err
	}
	return decodeDocument(resp.body)
}
