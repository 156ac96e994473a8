package installer

import (
	"bytes"
	"fmt"

	"github.com/BurntSushi/toml"
)

// ConfigValues are the config keys `keygen-agent install` can write. They are
// a subset of the TOML keys the agent reads (package agent, type Config):
//
//	account      = "…"   # Keygen account id or slug (KEYGEN_ACCOUNT)
//	product      = "…"   # Keygen product id (KEYGEN_PRODUCT)
//	public_key   = "…"   # account Ed25519 verify key, hex (KEYGEN_PUBLIC_KEY)
//	license_key  = "…"   # this machine's license key (KEYGEN_LICENSE_KEY)
//	api_url      = "…"   # default https://api.keygen.sh (KEYGEN_API_URL)
//	environment  = "…"   # optional Keygen environment (KEYGEN_ENVIRONMENT)
//	data_dir     = "…"   # cache directory
//	socket       = "…"   # local socket path (unix)
//	socket_group = "…"   # group allowed to use the socket (unix)
//
// Empty values are omitted.
type ConfigValues struct {
	Account     string `toml:"account,omitempty"`
	Product     string `toml:"product,omitempty"`
	PublicKey   string `toml:"public_key,omitempty"`
	LicenseKey  string `toml:"license_key,omitempty"`
	APIURL      string `toml:"api_url,omitempty"`
	Environment string `toml:"environment,omitempty"`
	DataDir     string `toml:"data_dir,omitempty"`
	Socket      string `toml:"socket,omitempty"`
	SocketGroup string `toml:"socket_group,omitempty"`
}

const configHeader = `# keygen-agent configuration, written by "keygen-agent install".
# Keys (all strings): account, product, public_key, license_key, api_url,
# environment, data_dir, socket, socket_group. The KEYGEN_* environment
# variables override them; see the README's configuration reference.
`

const skeletonHint = `# Fill in your Keygen account and its Ed25519 public key, then restart the
# service (keygen-agent restart). Add the license with "keygen-agent activate KEY".
#account = "your-account-id"
#product = "your-product-id"
#public_key = "hex Ed25519 verify key"
#license_key = ""
#api_url = "https://api.keygen.sh"
`

// RenderConfig returns the TOML config file for v. When neither Account nor
// PublicKey is set, commented placeholders for them are included.
func RenderConfig(v ConfigValues) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString(configHeader)
	if v.Account == "" && v.PublicKey == "" {
		b.WriteString(skeletonHint)
	}
	b.WriteString("\n")
	if err := toml.NewEncoder(&b).Encode(v); err != nil {
		return nil, fmt.Errorf("encode config: %w", err)
	}
	return b.Bytes(), nil
}

// containsLicenseKey reports whether a TOML config sets license_key, so the
// file gets mode 0600. Unparsable content is treated as secret.
func containsLicenseKey(data []byte) bool {
	if data == nil {
		return false
	}
	var c struct {
		LicenseKey string `toml:"license_key"`
	}
	if _, err := toml.Decode(string(data), &c); err != nil {
		return true
	}
	return c.LicenseKey != ""
}
