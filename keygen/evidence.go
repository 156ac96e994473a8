package keygen

import (
	"net/http"
	"strings"
)

// SignedResponse is a Keygen response kept exactly as received, with every
// input of its Keygen-Signature, so that someone else (an app holding the
// account's public key) can verify it later. See docs/protocol.md.
type SignedResponse struct {
	Body          []byte
	Signature     string // Keygen-Signature
	Digest        string // Digest (or Keygen-Digest)
	Date          string // the Date header that the signature covers
	RequestTarget string // "<lowercase method> <request URI>"
	Host          string // the request's host without port (Rails request.host)
}

// signedResponse captures the signature inputs of a response to req. When
// the client verified the response, Date is the header that verified.
func signedResponse(req *http.Request, h http.Header, body []byte, info ResponseInfo) *SignedResponse {
	digest := strings.TrimSpace(h.Get("Digest"))
	if digest == "" {
		digest = strings.TrimSpace(h.Get("Keygen-Digest"))
	}
	date := h.Get("Date")
	if kd := h.Get("Keygen-Date"); kd != "" && kd != date {
		if date == "" {
			date = kd
		} else if t, err := http.ParseTime(kd); info.Verified && err == nil && t.Equal(info.Date) {
			date = kd
		}
	}
	return &SignedResponse{
		Body:          body,
		Signature:     h.Get("Keygen-Signature"),
		Digest:        digest,
		Date:          date,
		RequestTarget: strings.ToLower(req.Method) + " " + req.URL.RequestURI(),
		Host:          req.URL.Hostname(),
	}
}
