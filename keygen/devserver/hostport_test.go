package devserver

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

var sigRe = regexp.MustCompile(`signature="([^"]+)"`)

// verifyLikeKeygenGo checks a response the way keygen-go 3.x does: the
// signing string's host is the request URL's host, port included.
func verifyLikeKeygenGo(t *testing.T, pubHex string, req *http.Request, res *http.Response, body []byte) bool {
	t.Helper()
	pub, _ := hex.DecodeString(pubHex)
	sum := sha256.Sum256(body)
	digest := "sha-256=" + base64.StdEncoding.EncodeToString(sum[:])
	m := sigRe.FindStringSubmatch(res.Header.Get("Keygen-Signature"))
	if m == nil {
		t.Fatalf("no signature")
	}
	sig, _ := base64.StdEncoding.DecodeString(m[1])
	msg := "(request-target): " + strings.ToLower(req.Method) + " " + req.URL.RequestURI() + "\n" +
		"host: " + req.URL.Host + "\n" + "date: " + res.Header.Get("Date") + "\n" + "digest: " + digest
	return ed25519.Verify(pub, []byte(msg), sig)
}

// Issue 16 #12: Keygen signs the host without the port and keygen-go
// verifies against the URL's host with the port, so keygen-go cannot
// verify a dev server on a random port unless it signs host:port
// (Options.SignHostWithPort, `devserver --sign-host-with-port`).
func TestSignHostWithPortForKeygenGo(t *testing.T) {
	for _, tc := range []struct {
		withPort bool
		verifies bool
	}{{false, false}, {true, true}} {
		s, err := New(Options{CullInterval: -1, DisableRateLimit: true, SignHostWithPort: tc.withPort})
		if err != nil {
			t.Fatal(err)
		}
		d := demo(t, s, DemoOptions{})
		u, _ := url.Parse(s.URL() + "/v1/accounts/" + s.AccountID() + "/me")
		if u.Port() == "" {
			t.Fatalf("no port in %s", u)
		}
		req, _ := http.NewRequest("GET", u.String(), nil)
		req.Header.Set("Authorization", "License "+d.License.Key)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Fatalf("%d %s", res.StatusCode, body)
		}
		if got := verifyLikeKeygenGo(t, s.PublicKeyHex(), req, res, body); got != tc.verifies {
			t.Errorf("SignHostWithPort=%v: keygen-go verification %v, want %v", tc.withPort, got, tc.verifies)
		}
		_ = s.Close()
	}
}
