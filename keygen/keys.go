package keygen

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
)

// PublicKeys are an account's verification keys. Ed25519 is the account's
// default key; RSA and ECDSA are needed only for certificates and responses
// signed with rsa-* or ecdsa-p256.
type PublicKeys struct {
	Ed25519 ed25519.PublicKey
	RSA     *rsa.PublicKey
	ECDSA   *ecdsa.PublicKey
}

// ParsePublicKeys parses the account's keys. ed25519HexOrPEM is the 64-char
// hex key shown in the Keygen dashboard, or base64 SPKI DER, or a PEM;
// rsaPEM and ecdsaPEM are SPKI PEMs (an RSA PKCS#1 PEM is accepted too).
// Empty strings leave the corresponding key nil.
func ParsePublicKeys(ed25519HexOrPEM, rsaPEM, ecdsaPEM string) (PublicKeys, error) {
	var k PublicKeys
	if s := strings.TrimSpace(ed25519HexOrPEM); s != "" {
		p, err := ParsePublicKey(s)
		if err != nil {
			return k, fmt.Errorf("parse ed25519 public key: %w", err)
		}
		if p.Ed25519 == nil {
			return k, errors.New("parse ed25519 public key: not an Ed25519 key")
		}
		k.Ed25519 = p.Ed25519
	}
	if s := strings.TrimSpace(rsaPEM); s != "" {
		p, err := ParsePublicKey(s)
		if err != nil {
			return k, fmt.Errorf("parse rsa public key: %w", err)
		}
		if p.RSA == nil {
			return k, errors.New("parse rsa public key: not an RSA key")
		}
		k.RSA = p.RSA
	}
	if s := strings.TrimSpace(ecdsaPEM); s != "" {
		p, err := ParsePublicKey(s)
		if err != nil {
			return k, fmt.Errorf("parse ecdsa public key: %w", err)
		}
		if p.ECDSA == nil {
			return k, errors.New("parse ecdsa public key: not an ECDSA key")
		}
		k.ECDSA = p.ECDSA
	}
	return k, nil
}

// ParsePublicKey parses one key of any supported kind (Ed25519 hex, base64
// SPKI DER, or a PEM holding an Ed25519, RSA or ECDSA P-256 key) and returns
// it in the matching field.
func ParsePublicKey(s string) (PublicKeys, error) {
	var k PublicKeys
	s = strings.TrimSpace(s)
	var der []byte
	switch {
	case len(s) == 2*ed25519.PublicKeySize && isHex(s):
		b, _ := hex.DecodeString(s)
		k.Ed25519 = ed25519.PublicKey(b)
		return k, nil
	case strings.Contains(s, "-----BEGIN"):
		blk, _ := pem.Decode([]byte(s))
		if blk == nil {
			return k, errors.New("invalid PEM")
		}
		if blk.Type == "RSA PUBLIC KEY" {
			pub, err := x509.ParsePKCS1PublicKey(blk.Bytes)
			if err != nil {
				return k, fmt.Errorf("parse PKCS#1 key: %w", err)
			}
			k.RSA = pub
			return k, nil
		}
		der = blk.Bytes
	default:
		b, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(s), ""))
		if err != nil {
			return k, errors.New("neither 64 hex characters, base64 DER nor PEM")
		}
		if len(b) == ed25519.PublicKeySize {
			k.Ed25519 = ed25519.PublicKey(b)
			return k, nil
		}
		der = b
	}
	pub, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return k, fmt.Errorf("parse SPKI key: %w", err)
	}
	switch p := pub.(type) {
	case ed25519.PublicKey:
		k.Ed25519 = p
	case *rsa.PublicKey:
		k.RSA = p
	case *ecdsa.PublicKey:
		if p.Curve != elliptic.P256() {
			return k, errors.New("ECDSA key is not on P-256")
		}
		k.ECDSA = p
	default:
		return k, fmt.Errorf("unsupported key type %T", pub)
	}
	return k, nil
}

func isHex(s string) bool {
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// KeyID names the key that verifies signing algorithm alg (e.g. "ed25519"),
// for display: the Ed25519 key in hex, or "sha256:<hex>" of an RSA/ECDSA
// SPKI. It returns "" if no such key is configured.
func (k PublicKeys) KeyID(alg string) string {
	var pub crypto.PublicKey
	switch alg {
	case "ed25519":
		if len(k.Ed25519) == ed25519.PublicKeySize {
			return hex.EncodeToString(k.Ed25519)
		}
		return ""
	case "rsa-pss-sha256", "rsa-sha256":
		if k.RSA == nil {
			return ""
		}
		pub = k.RSA
	case "ecdsa-p256":
		if k.ECDSA == nil {
			return ""
		}
		pub = k.ECDSA
	default:
		return ""
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(der)
	return "sha256:" + hex.EncodeToString(sum[:])
}

var (
	errNoKey  = errors.New("no public key configured for this algorithm")
	errBadSig = errors.New("signature does not verify")
	errUnkAlg = errors.New("unknown signing algorithm")
)

// verifySig checks sig over msg with the key alg names. It returns errUnkAlg
// or errNoKey (unsupported) or errBadSig (not genuine).
func verifySig(k PublicKeys, alg string, msg, sig []byte) error {
	switch alg {
	case "ed25519":
		if len(k.Ed25519) != ed25519.PublicKeySize {
			return errNoKey
		}
		if !ed25519.Verify(k.Ed25519, msg, sig) {
			return errBadSig
		}
		return nil
	case "rsa-pss-sha256", "rsa-sha256":
		if k.RSA == nil {
			return errNoKey
		}
		h := sha256.Sum256(msg)
		var err error
		if alg == "rsa-pss-sha256" {
			err = rsa.VerifyPSS(k.RSA, crypto.SHA256, h[:], sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto, Hash: crypto.SHA256})
		} else {
			err = rsa.VerifyPKCS1v15(k.RSA, crypto.SHA256, h[:], sig)
		}
		if err != nil {
			return errBadSig
		}
		return nil
	case "ecdsa-p256":
		if k.ECDSA == nil {
			return errNoKey
		}
		h := sha256.Sum256(msg)
		if !ecdsa.VerifyASN1(k.ECDSA, h[:], sig) {
			return errBadSig
		}
		return nil
	}
	return errUnkAlg
}
