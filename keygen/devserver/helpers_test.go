package devserver

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

// client is a minimal Keygen client written for the tests: it verifies
// every signed response with raw crypto/ed25519, independently of the
// server's signing code.
type client struct {
	t      testing.TB
	s      *Server
	hc     *http.Client
	base   string
	auth   string
	header http.Header
	// unsigned lists statuses allowed without a signature.
	noVerify bool
}

func newClient(t testing.TB, s *Server, auth string) *client {
	hc := &http.Client{Transport: s.Transport()}
	base := s.URL()
	if base == "http://devserver.invalid" || strings.HasPrefix(base, "http://devserver") {
		base = "http://devserver.invalid"
	}
	return &client{t: t, s: s, hc: hc, base: base + "/v1/accounts/" + s.AccountID(), auth: auth}
}

func (c *client) with(auth string) *client {
	cc := *c
	cc.auth = auth
	return &cc
}

type resp struct {
	Status int
	Header http.Header
	Raw    []byte
	Doc    map[string]any
}

func (r *resp) code() string {
	errs, _ := r.Doc["errors"].([]any)
	if len(errs) == 0 {
		return ""
	}
	e, _ := errs[0].(map[string]any)
	s, _ := e["code"].(string)
	return s
}

func (r *resp) detail() string {
	errs, _ := r.Doc["errors"].([]any)
	if len(errs) == 0 {
		return ""
	}
	s, _ := errs[0].(map[string]any)["detail"].(string)
	return s
}

// get walks a decoded JSON document: get("data","attributes","status").
func (r *resp) get(path ...any) any { return walk(r.Doc, path...) }

func (r *resp) str(path ...any) string {
	s, _ := r.get(path...).(string)
	return s
}

func walk(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, _ := v.(map[string]any)
			v = m[k]
		case int:
			a, _ := v.([]any)
			if k >= len(a) {
				return nil
			}
			v = a[k]
		}
	}
	return v
}

func (c *client) do(method, path string, body any) *resp {
	c.t.Helper()
	var rd io.Reader
	if body != nil {
		switch b := body.(type) {
		case string:
			rd = strings.NewReader(b)
		default:
			raw, err := json.Marshal(b)
			if err != nil {
				c.t.Fatal(err)
			}
			rd = bytes.NewReader(raw)
		}
	}
	target := path
	if !strings.HasPrefix(path, "http") {
		target = c.base + path
	}
	req, err := http.NewRequest(method, target, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Accept", "application/vnd.api+json")
	if body != nil {
		req.Header.Set("Content-Type", "application/vnd.api+json")
	}
	if c.auth != "" {
		req.Header.Set("Authorization", c.auth)
	}
	for k, v := range c.header {
		req.Header[k] = v
	}
	res, err := c.hc.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		c.t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	r := &resp{Status: res.StatusCode, Header: res.Header, Raw: raw}
	if len(raw) > 0 && strings.Contains(res.Header.Get("Content-Type"), "json") {
		if err := json.Unmarshal(raw, &r.Doc); err != nil {
			c.t.Fatalf("%s %s: bad JSON %q: %v", method, path, raw, err)
		}
	}
	if !c.noVerify && res.StatusCode != 429 && res.StatusCode < 500 {
		if err := verifyEd25519Response(c.s.PublicKeyHex(), req, res.Header, raw); err != nil {
			c.t.Fatalf("%s %s (%d): %v", method, path, res.StatusCode, err)
		}
	}
	return r
}

var sigParamRe = regexp.MustCompile(`(\w+)="([^"]*)"`)

// verifyEd25519Response checks Digest and Keygen-Signature the way a Keygen
// SDK does, from scratch.
func verifyEd25519Response(pubHex string, req *http.Request, h http.Header, body []byte) error {
	pub, err := hex.DecodeString(pubHex)
	if err != nil || len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("bad public key %q", pubHex)
	}
	sum := sha256.Sum256(body)
	digest := "sha-256=" + base64.StdEncoding.EncodeToString(sum[:])
	if got := h.Get("Digest"); got != digest {
		return fmt.Errorf("digest %q, want %q", got, digest)
	}
	params := map[string]string{}
	for _, m := range sigParamRe.FindAllStringSubmatch(h.Get("Keygen-Signature"), -1) {
		params[m[1]] = m[2]
	}
	if params["algorithm"] != "ed25519" || params["headers"] != "(request-target) host date digest" {
		return fmt.Errorf("signature header %q", h.Get("Keygen-Signature"))
	}
	sig, err := base64.StdEncoding.DecodeString(params["signature"])
	if err != nil {
		return fmt.Errorf("signature encoding: %v", err)
	}
	host := req.URL.Hostname()
	msg := "(request-target): " + strings.ToLower(req.Method) + " " + req.URL.RequestURI() + "\n" +
		"host: " + host + "\n" +
		"date: " + h.Get("Date") + "\n" +
		"digest: " + digest
	if !ed25519.Verify(pub, []byte(msg), sig) {
		return fmt.Errorf("signature does not verify over %q", msg)
	}
	return nil
}

// jsonapi builds a JSON:API request document.
func jsonapi(typ string, attrs map[string]any, rels map[string]any) map[string]any {
	d := map[string]any{"type": typ}
	if attrs != nil {
		d["attributes"] = attrs
	}
	if rels != nil {
		d["relationships"] = rels
	}
	return map[string]any{"data": d}
}

func ref(typ, id string) map[string]any {
	return map[string]any{"data": map[string]any{"type": typ, "id": id}}
}

// activate activates fp on the license and returns the machine id.
func (c *client) activate(licenseID, fp string, comps ...string) string {
	c.t.Helper()
	rels := map[string]any{"license": ref("licenses", licenseID)}
	if len(comps) > 0 {
		var list []any
		for i, cf := range comps {
			list = append(list, map[string]any{"type": "components", "attributes": map[string]any{"fingerprint": cf, "name": fmt.Sprintf("c%d", i)}})
		}
		rels["components"] = map[string]any{"data": list}
	}
	r := c.do("POST", "/machines", jsonapi("machines", map[string]any{"fingerprint": fp, "platform": "linux/amd64", "cores": 4}, rels))
	if r.Status != 201 {
		c.t.Fatalf("activate %s: %d %s", fp, r.Status, r.Raw)
	}
	return r.str("data", "id")
}

func (c *client) spawn(machineID, pid string) *resp {
	c.t.Helper()
	return c.do("POST", "/processes", jsonapi("processes", map[string]any{"pid": pid}, map[string]any{"machine": ref("machines", machineID)}))
}

func licenseAuth(key string) string { return "License " + key }
func bearerAuth(tok string) string  { return "Bearer " + tok }

func newTestServer(t testing.TB, o Options) *Server {
	t.Helper()
	if !o.NoListen {
		o.NoListen = true
	}
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// demo seeds a demo account for tests that speak with the license key:
// unless they say otherwise, LICENSE authentication and every license
// permission. Keygen's defaults (TOKEN, default permissions) are tested
// with s.Demo directly in authz_test.go.
func demo(t testing.TB, s *Server, o DemoOptions) Demo {
	t.Helper()
	if o.AuthenticationStrategy == "" {
		o.AuthenticationStrategy = "LICENSE"
	}
	if o.Permissions == nil {
		o.Permissions = LicensePermissions
	}
	d, err := s.Demo(o)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

var _ = url.PathEscape
