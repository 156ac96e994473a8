package keygen

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// verifyResponse checks Keygen-Signature, Digest and Date of a response to
// req (keygen-api app/controllers/concerns/signature_headers.rb) and returns the signed Date.
// The Date is checked against the replay window on the trusted clock
// (Config.TrustedNow) unless the answer is nonceBound: the caller then
// binds it to its request by the nonce, fresh whatever the clocks say.
func (c *Client) verifyResponse(req *http.Request, h http.Header, body []byte, nonceBound bool) (time.Time, error) {
	digest := strings.TrimSpace(h.Get("Digest"))
	if digest == "" {
		digest = strings.TrimSpace(h.Get("Keygen-Digest"))
	}
	if digest == "" {
		return time.Time{}, fmt.Errorf("%w: no Digest header", ErrNotGenuine)
	}
	sum := sha256.Sum256(body)
	want := "sha-256=" + base64.StdEncoding.EncodeToString(sum[:])
	if subtle.ConstantTimeCompare([]byte(digest), []byte(want)) != 1 {
		return time.Time{}, fmt.Errorf("%w: Digest does not match the body", ErrNotGenuine)
	}
	params := parseSignatureHeader(h.Get("Keygen-Signature"))
	sigB64 := params["signature"]
	if sigB64 == "" {
		return time.Time{}, fmt.Errorf("%w: no Keygen-Signature", ErrNotGenuine)
	}
	alg := params["algorithm"]
	if alg == "" {
		alg = "ed25519"
	}
	sig, err := base64.StdEncoding.DecodeString(sigB64)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: signature is not base64", ErrNotGenuine)
	}
	// The server signs request.host (no port) and original_fullpath.
	target := strings.ToLower(req.Method) + " " + req.URL.RequestURI()
	host := req.URL.Hostname()
	var dates []string
	for _, d := range []string{h.Get("Date"), h.Get("Keygen-Date")} {
		if d != "" && (len(dates) == 0 || dates[0] != d) {
			dates = append(dates, d)
		}
	}
	if len(dates) == 0 {
		return time.Time{}, fmt.Errorf("%w: no Date header", ErrNotGenuine)
	}
	var signed string
	verr := errBadSig
	for _, d := range dates {
		msg := signingString(target, host, d, digest)
		if verr = verifySig(c.keys, alg, []byte(msg), sig); verr == nil {
			signed = d
			break
		}
	}
	if verr != nil {
		return time.Time{}, fmt.Errorf("%w: %s signature: %v", ErrNotGenuine, alg, verr)
	}
	date, err := http.ParseTime(signed)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: bad Date %q", ErrNotGenuine, signed)
	}
	if c.drift >= 0 && !nonceBound {
		if err := checkDate(date, c.trusted(), c.drift); err != nil {
			return time.Time{}, err
		}
	}
	return date.UTC(), nil
}

// signingString is the message Keygen signs for a response.
func signingString(target, host, date, digest string) string {
	return "(request-target): " + target + "\nhost: " + host + "\ndate: " + date + "\ndigest: " + digest
}

// parseSignatureHeader parses `k="v", k2="v2"` into a map.
func parseSignatureHeader(s string) map[string]string {
	out := map[string]string{}
	for s = strings.TrimSpace(s); s != ""; {
		eq := strings.IndexByte(s, '=')
		if eq <= 0 {
			break
		}
		key := strings.ToLower(strings.TrimSpace(s[:eq]))
		s = strings.TrimSpace(s[eq+1:])
		var val string
		if strings.HasPrefix(s, `"`) {
			end := strings.IndexByte(s[1:], '"')
			if end < 0 {
				break
			}
			val, s = s[1:1+end], s[2+end:]
		} else {
			end := strings.IndexByte(s, ',')
			if end < 0 {
				end = len(s)
			}
			val, s = strings.TrimSpace(s[:end]), s[end:]
		}
		if _, dup := out[key]; !dup {
			out[key] = val
		}
		s = strings.TrimLeft(s, ", \t")
	}
	return out
}
