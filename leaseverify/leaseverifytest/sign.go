// Package leaseverifytest issues lease evidence signed with a test key, the
// way Keygen signs machine files and responses, so that apps (and this
// repository) can test their verification without a Keygen account.
package leaseverifytest

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/keygen-agent/keygen-agent/leaseverify"
)

// Issuer signs evidence with Key. The zero values of the other fields are
// filled by [New].
type Issuer struct {
	Key                  ed25519.PrivateKey
	MachineID, LicenseID string
	Fingerprint          string
	Components           []string
	Host                 string
	Target               string
	Issued               time.Time
	Expiry               *time.Time // nil: the machine file never expires
}

// New returns an issuer with a key derived from seed (any string) for a
// machine with this fingerprint, whose machine file was issued at now and
// lasts a day.
func New(seed, fingerprint string, now time.Time) *Issuer {
	s := sha256.Sum256([]byte(seed))
	exp := now.Add(24 * time.Hour)
	return &Issuer{Key: ed25519.NewKeyFromSeed(s[:]), MachineID: "machine-" + seed, LicenseID: "license-" + seed,
		Fingerprint: fingerprint, Host: "api.keygen.sh", Target: "post /v1/accounts/acct/processes",
		Issued: now, Expiry: &exp}
}

// PublicKeyHex is the public key as Keygen shows it (64 hex characters).
func (i *Issuer) PublicKeyHex() string {
	return hex.EncodeToString(i.Key.Public().(ed25519.PublicKey))
}

// MachineFile is a base64+ed25519 machine file for the issuer's machine.
func (i *Issuer) MachineFile() string {
	meta := map[string]any{"issued": i.Issued.UTC()}
	if i.Expiry != nil {
		meta["expiry"], meta["ttl"] = i.Expiry.UTC(), int(i.Expiry.Sub(i.Issued).Seconds())
	}
	var inc []any
	for n, c := range i.Components {
		inc = append(inc, map[string]any{"type": "components", "id": fmt.Sprintf("component-%d", n),
			"attributes": map[string]any{"fingerprint": c, "name": fmt.Sprintf("component %d", n)}})
	}
	plain, _ := json.Marshal(map[string]any{
		"data": map[string]any{"type": "machines", "id": i.MachineID,
			"attributes":    map[string]any{"fingerprint": i.Fingerprint},
			"relationships": map[string]any{"license": map[string]any{"data": map[string]any{"type": "licenses", "id": i.LicenseID}}}},
		"included": inc, "meta": meta,
	})
	enc := base64.StdEncoding.EncodeToString(plain)
	sig := ed25519.Sign(i.Key, []byte("machine/"+enc))
	env, _ := json.Marshal(map[string]string{"enc": enc, "sig": base64.StdEncoding.EncodeToString(sig), "alg": "base64+ed25519"})
	b := base64.StdEncoding.EncodeToString(env)
	var sb strings.Builder
	sb.WriteString("-----BEGIN MACHINE FILE-----\n")
	for len(b) > 60 {
		sb.WriteString(b[:60] + "\n")
		b = b[60:]
	}
	sb.WriteString(b + "\n-----END MACHINE FILE-----\n")
	return sb.String()
}

// Sign signs body as Keygen signs a response to the issuer's target.
func (i *Issuer) Sign(body []byte, date time.Time) *leaseverify.SignedResponse {
	sum := sha256.Sum256(body)
	digest := "sha-256=" + base64.StdEncoding.EncodeToString(sum[:])
	d := date.UTC().Format(http.TimeFormat)
	msg := "(request-target): " + i.Target + "\nhost: " + i.Host + "\ndate: " + d + "\ndigest: " + digest
	sig := base64.StdEncoding.EncodeToString(ed25519.Sign(i.Key, []byte(msg)))
	return &leaseverify.SignedResponse{Body: body, Digest: digest, Date: d, RequestTarget: i.Target, Host: i.Host,
		Signature: fmt.Sprintf(`keyid="acct", algorithm="ed25519", signature="%s", headers="(request-target) host date digest"`, sig)}
}

// ProcessBody is a process document as Keygen returns it for a spawn.
func (i *Issuer) ProcessBody(processID, pid, leaseID string) []byte {
	b, _ := json.Marshal(map[string]any{"data": map[string]any{
		"type": "processes", "id": processID,
		"attributes": map[string]any{"pid": pid, "status": "ALIVE", "interval": 600,
			"metadata": map[string]any{"leaseId": leaseID}},
		"relationships": map[string]any{
			"machine": map[string]any{"data": map[string]any{"type": "machines", "id": i.MachineID}},
			"license": map[string]any{"data": map[string]any{"type": "licenses", "id": i.LicenseID}},
		},
	}})
	return b
}

// Evidence is signed evidence for lease leaseID held by the process pid
// ("<kernel pid>@<start time>"), dated date.
func (i *Issuer) Evidence(leaseID, pid string, date time.Time) *leaseverify.Evidence {
	return &leaseverify.Evidence{Status: leaseverify.StatusSigned, MachineFile: i.MachineFile(),
		Process: i.Sign(i.ProcessBody("process-"+leaseID, pid, leaseID), date)}
}
