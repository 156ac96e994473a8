package keygen

import (
	"encoding/base64"
	"encoding/json"
	"strings"
)

// VerifyLicenseKey verifies an ED25519_SIGN license key,
// "key/<b64url(data)>.<b64url(sig)>", and returns its signed data: the
// embedded JSON as is, or, for a custom non-JSON key seed, that seed as a
// JSON string. The data is frozen at key creation (keygen-api app/models/license.rb); it is not
// the license's current state.
//
// Errors wrap ErrCertMalformed (not a signed key), ErrCertUnsupported (no
// Ed25519 key configured) or ErrCertNotGenuine, in a *[CertificateError]
// with Kind "key".
func VerifyLicenseKey(key string, keys PublicKeys) (json.RawMessage, error) {
	const kind CertKind = "key"
	signed, sigPart, ok := strings.Cut(strings.TrimSpace(key), ".")
	if !ok {
		return nil, certErr(kind, ErrCertMalformed, "not a signed key (no signature part)")
	}
	prefix, dataPart, ok := strings.Cut(signed, "/")
	if !ok || prefix != "key" {
		return nil, certErr(kind, ErrCertMalformed, `not a signed key (no "key/" prefix)`)
	}
	data, err := decodeB64URL(dataPart)
	if err != nil {
		return nil, certErr(kind, ErrCertMalformed, "data is not base64url")
	}
	sig, err := decodeB64URL(sigPart)
	if err != nil {
		return nil, certErr(kind, ErrCertNotGenuine, "signature is not base64url")
	}
	switch verifySig(keys, "ed25519", []byte(signed), sig) {
	case nil:
	case errNoKey:
		return nil, certErr(kind, ErrCertUnsupported, "no ed25519 public key configured")
	default:
		return nil, certErr(kind, ErrCertNotGenuine, "ed25519 signature does not verify")
	}
	if json.Valid(data) {
		return json.RawMessage(data), nil
	}
	b, _ := json.Marshal(string(data))
	return json.RawMessage(b), nil
}

func decodeB64URL(s string) ([]byte, error) {
	if strings.HasSuffix(s, "=") || len(s)%4 == 0 {
		if b, err := base64.URLEncoding.DecodeString(s); err == nil {
			return b, nil
		}
	}
	return base64.RawURLEncoding.DecodeString(s)
}
