package leaseverify

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

var (
	testNow  = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	seedKey  = ed25519.NewKeyFromSeed(make([]byte, 32))
	otherKey = ed25519.NewKeyFromSeed([]byte("another account's signing key!!!"))
)

type fixture struct {
	key                     ed25519.PrivateKey
	machineID, licenseID    string
	fingerprint, component  string
	pid, leaseID, status    string
	date                    time.Time
	issued                  time.Time
	expiry                  *time.Time
	processMachine, fileAlg string
}

func newFixture() *fixture {
	exp := testNow.Add(24 * time.Hour)
	return &fixture{
		key: seedKey, machineID: "m-1", licenseID: "l-1", fingerprint: "fp-this", component: "cmp-this",
		pid: "4242@987654", leaseID: "lease_abc", status: "ALIVE", date: testNow.Add(-time.Minute),
		issued: testNow.Add(-time.Hour), expiry: &exp, processMachine: "m-1", fileAlg: "base64+ed25519",
	}
}

// MachineFileText signs a machine file the way Keygen does.
func machineFileText(key ed25519.PrivateKey, alg string, payload any) string {
	plain, _ := json.Marshal(payload)
	enc := base64.StdEncoding.EncodeToString(plain)
	sig := ed25519.Sign(key, []byte("machine/"+enc))
	env, _ := json.Marshal(map[string]string{"enc": enc, "sig": base64.StdEncoding.EncodeToString(sig), "alg": alg})
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

// SignResponse signs a body the way Keygen signs responses.
func signResponse(key ed25519.PrivateKey, target, host string, date time.Time, body []byte) *SignedResponse {
	sum := sha256.Sum256(body)
	digest := "sha-256=" + base64.StdEncoding.EncodeToString(sum[:])
	d := date.UTC().Format(http.TimeFormat)
	msg := "(request-target): " + target + "\nhost: " + host + "\ndate: " + d + "\ndigest: " + digest
	sig := base64.StdEncoding.EncodeToString(ed25519.Sign(key, []byte(msg)))
	return &SignedResponse{Body: body, Digest: digest, Date: d, RequestTarget: target, Host: host,
		Signature: fmt.Sprintf(`keyid="acct", algorithm="ed25519", signature="%s", headers="(request-target) host date digest"`, sig)}
}

func (f *fixture) machineFile() string {
	meta := map[string]any{"issued": f.issued, "ttl": 86400}
	if f.expiry != nil {
		meta["expiry"] = *f.expiry
	}
	return machineFileText(f.key, f.fileAlg, map[string]any{
		"data": map[string]any{"type": "machines", "id": f.machineID,
			"attributes":    map[string]any{"fingerprint": f.fingerprint},
			"relationships": map[string]any{"license": map[string]any{"data": map[string]any{"type": "licenses", "id": f.licenseID}}}},
		"included": []any{map[string]any{"type": "components", "id": "c-1", "attributes": map[string]any{"fingerprint": f.component, "name": "disk"}}},
		"meta":     meta,
	})
}

func (f *fixture) processBody() []byte {
	b, _ := json.Marshal(map[string]any{"data": map[string]any{
		"type": "processes", "id": "proc-1",
		"attributes": map[string]any{"pid": f.pid, "status": f.status, "interval": 600,
			"metadata": map[string]any{"leaseId": f.leaseID, "app": "MyApp"}},
		"relationships": map[string]any{
			"machine": map[string]any{"data": map[string]any{"type": "machines", "id": f.processMachine}},
			"license": map[string]any{"data": map[string]any{"type": "licenses", "id": f.licenseID}},
		},
	}})
	return b
}

func (f *fixture) evidence() *Evidence {
	return &Evidence{Status: StatusSigned, MachineFile: f.machineFile(),
		Process: signResponse(f.key, "post /v1/accounts/acct/processes", "api.keygen.sh", f.date, f.processBody())}
}

func opts() Options {
	return Options{
		PublicKey: hex.EncodeToString(seedKey.Public().(ed25519.PublicKey)), PID: 4242, StartTime: 987654,
		Fingerprints: []string{"fp-this"}, Now: func() time.Time { return testNow },
	}
}

func TestVerifyGenuine(t *testing.T) {
	res, err := VerifyLease("lease_abc", newFixture().evidence(), opts())
	if err != nil {
		t.Fatal(err)
	}
	if res.Offline || res.ProcessID != "proc-1" || res.MachineID != "m-1" || res.LicenseID != "l-1" ||
		res.Fingerprint != "fp-this" || !res.Date.Equal(testNow.Add(-time.Minute)) {
		t.Fatalf("result %+v", res)
	}
	// A component match is enough; the PID alone when the start time is unknown.
	o := opts()
	o.Fingerprints, o.Components, o.StartTime = nil, []string{"x", "cmp-this"}, 0
	if _, err := VerifyLease("lease_abc", newFixture().evidence(), o); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyRefusals(t *testing.T) {
	for _, tc := range []struct {
		name   string
		lease  string
		change func(f *fixture)
		ev     func(ev *Evidence)
		opt    func(o *Options)
		want   Check
	}{
		{name: "stub: no evidence", ev: func(ev *Evidence) { *ev = Evidence{} }, want: CheckEvidence},
		{name: "stub: signed by another key", change: func(f *fixture) { f.key = otherKey }, want: CheckMachineFile},
		{name: "stub: process signed by another key", ev: func(ev *Evidence) {
			f := newFixture()
			ev.Process = signResponse(otherKey, "post /v1/accounts/acct/processes", "api.keygen.sh", f.date, f.processBody())
		}, want: CheckSignature},
		{name: "pending", ev: func(ev *Evidence) { ev.Status, ev.Process = StatusPending, nil }, want: CheckPending},
		{name: "offline refused", ev: func(ev *Evidence) { ev.Status, ev.Process = StatusOffline, nil },
			opt: func(o *Options) { o.RequireOnline = true }, want: CheckOffline},
		{name: "encrypted machine file", change: func(f *fixture) { f.fileAlg = "aes-256-gcm+ed25519" }, want: CheckMachineFile},
		{name: "machine file expired", change: func(f *fixture) { e := testNow.Add(-time.Second); f.expiry = &e }, want: CheckExpired},
		{name: "another machine", change: func(f *fixture) { f.fingerprint, f.component = "fp-other", "cmp-other" }, want: CheckFingerprint},
		{name: "tampered body", ev: func(ev *Evidence) { ev.Process.Body[10] ^= 1 }, want: CheckDigest},
		{name: "tampered date", ev: func(ev *Evidence) { ev.Process.Date = testNow.Format(http.TimeFormat) }, want: CheckSignature},
		{name: "tampered target", ev: func(ev *Evidence) { ev.Process.RequestTarget = "get /v1/accounts/acct/processes" }, want: CheckSignature},
		{name: "wrong host", opt: func(o *Options) { o.Host = "licensing.example.com" }, want: CheckSignature},
		{name: "replayed from another process", change: func(f *fixture) { f.pid = "4243@987654" }, want: CheckProcess},
		{name: "recycled pid", change: func(f *fixture) { f.pid = "4242@1" }, want: CheckProcess},
		{name: "dead process", change: func(f *fixture) { f.status = "DEAD" }, want: CheckProcess},
		{name: "another lease", lease: "lease_other", want: CheckLease},
		{name: "process on another machine", change: func(f *fixture) { f.processMachine = "m-2" }, want: CheckMachine},
		{name: "old date", change: func(f *fixture) { f.date = testNow.Add(-2 * time.Hour) },
			opt: func(o *Options) { o.MaxAge = time.Hour }, want: CheckDate},
		{name: "before this process started", opt: func(o *Options) { o.NotBefore = testNow.Add(-30 * time.Minute) },
			change: func(f *fixture) { f.date = testNow.Add(-time.Hour) }, want: CheckDate},
		{name: "future date", change: func(f *fixture) { f.date = testNow.Add(time.Hour) }, want: CheckDate},
		{name: "no key", opt: func(o *Options) { o.PublicKey = "" }, want: CheckOptions},
		{name: "no fingerprint", opt: func(o *Options) { o.Fingerprints = nil }, want: CheckOptions},
		{name: "not a process", ev: func(ev *Evidence) {
			ev.Process = signResponse(seedKey, "get /v1/accounts/acct/me", "api.keygen.sh", testNow, []byte(`{"data":{"type":"users","id":"u"}}`))
		}, want: CheckDocument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture()
			if tc.change != nil {
				tc.change(f)
			}
			ev := f.evidence()
			if tc.ev != nil {
				tc.ev(ev)
			}
			o := opts()
			if tc.opt != nil {
				tc.opt(&o)
			}
			lease := "lease_abc"
			if tc.lease != "" {
				lease = tc.lease
			}
			_, err := VerifyLease(lease, ev, o)
			if !IsCheck(err, tc.want) {
				t.Fatalf("err %v, want check %s", err, tc.want)
			}
		})
	}
}

// Every single-byte change of the signed body, the machine file or the
// signature is refused.
func TestVerifyEveryByte(t *testing.T) {
	f := newFixture()
	base := f.evidence()
	for i := range base.Process.Body {
		ev := f.evidence()
		ev.Process.Body[i] ^= 0x20
		if _, err := VerifyLease("lease_abc", ev, opts()); !IsCheck(err, CheckDigest) {
			t.Fatalf("body byte %d: %v", i, err)
		}
	}
	mf := base.MachineFile
	for i := range mf {
		ev := f.evidence()
		b := []byte(mf)
		if b[i] == '\n' || b[i] == '-' {
			continue
		}
		b[i] ^= 0x01
		ev.MachineFile = string(b)
		if _, err := VerifyLease("lease_abc", ev, opts()); err == nil {
			t.Fatalf("machine file byte %d accepted", i)
		}
	}
}

func TestVerifyOffline(t *testing.T) {
	ev := newFixture().evidence()
	ev.Status, ev.Process = StatusOffline, nil
	res, err := VerifyLease("lease_abc", ev, opts())
	if err != nil || !res.Offline || res.MachineID != "m-1" || res.MachineFileExpiry == nil {
		t.Fatalf("%+v %v", res, err)
	}
}

func TestParsePublicKey(t *testing.T) {
	pub := seedKey.Public().(ed25519.PublicKey)
	for _, s := range []string{
		hex.EncodeToString(pub),
		"MCowBQYDK2VwAyEA" + base64.StdEncoding.EncodeToString(pub),
		"-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA" + base64.StdEncoding.EncodeToString(pub) + "\n-----END PUBLIC KEY-----\n",
	} {
		k, err := ParsePublicKey(s)
		if err != nil || !k.Equal(pub) {
			t.Errorf("%q: %v", s, err)
		}
	}
	for _, s := range []string{"", "zz", "MCowBQYDK2VwAyEA"} {
		if _, err := ParsePublicKey(s); !IsCheck(err, CheckOptions) {
			t.Errorf("%q: %v", s, err)
		}
	}
}
