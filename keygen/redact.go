package keygen

import (
	"fmt"
	"log/slog"
	"strings"
)

// redact keeps only enough of a secret to tell two apart in a log.
func redact(s string) string {
	switch {
	case s == "":
		return ""
	case len(s) <= 12:
		return "[redacted]"
	}
	return s[:4] + "..." + s[len(s)-4:]
}

// LogValue logs a Config without its license key or token.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("base_url", c.BaseURL),
		slog.String("account", c.Account),
		slog.String("environment", c.Environment),
		slog.String("api_version", c.APIVersion),
		slog.String("license_key", redact(c.LicenseKey)),
		slog.String("token", redact(c.Token)),
		slog.Bool("verify", c.PublicKey != ""),
	)
}

// String describes the client without its credentials.
func (c *Client) String() string {
	scheme, secret, _ := strings.Cut(c.auth, " ")
	if c.auth == "" {
		scheme = "none"
	}
	return fmt.Sprintf("keygen.Client{%s auth=%s %s verify=%v}", c.base, scheme, redact(secret), c.verify)
}

// GoString keeps %#v from printing credentials.
func (c *Client) GoString() string { return c.String() }
