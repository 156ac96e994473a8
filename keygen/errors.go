package keygen

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// classError is a sentinel that may belong to a broader class, so that
// errors.Is(ErrResponseTooOld, ErrNotGenuine) holds.
type classError struct {
	msg    string
	parent error
}

func (e *classError) Error() string { return e.msg }
func (e *classError) Unwrap() error { return e.parent }

func sentinel(msg string) error             { return &classError{msg: msg} }
func subSentinel(msg string, p error) error { return &classError{msg: msg, parent: p} }

// Sentinels for Keygen API answers, matched with errors.Is against an *[Error].
var (
	ErrNotFound             = sentinel("keygen: not found")
	ErrProcessLimitExceeded = sentinel("keygen: process limit exceeded")
	ErrPIDTaken             = sentinel("keygen: process pid already taken")
	ErrHeartbeatDead        = sentinel("keygen: heartbeat dead")
	ErrFingerprintTaken     = sentinel("keygen: fingerprint already taken")
	ErrMachineLimitExceeded = sentinel("keygen: machine limit exceeded")
	ErrComponentsTaken      = sentinel("keygen: component fingerprint taken or duplicated")
	ErrLicenseSuspended     = sentinel("keygen: license suspended")
	ErrLicenseExpired       = sentinel("keygen: license expired")
	ErrLicenseNotAllowed    = sentinel("keygen: license authentication not allowed")
	ErrTokenNotAllowed      = sentinel("keygen: token authentication not allowed")
	// ErrAuthNotAllowed matches both LICENSE_NOT_ALLOWED and
	// TOKEN_NOT_ALLOWED: the policy's authenticationStrategy refuses the
	// credential that was sent (concerns/authentication.rb).
	ErrAuthNotAllowed = sentinel("keygen: authentication strategy not allowed by policy")
	// ErrLoginRefused: the credential is known but its license (or owner)
	// may not log in: LICENSE_SUSPENDED, LICENSE_BANNED, LICENSE_EXPIRED
	// (under REVOKE_ACCESS) or USER_BANNED, answered with 403 on every
	// authenticated route (concerns/authentication.rb). Retrying does not
	// help.
	ErrLoginRefused = sentinel("keygen: license may not log in")
	// ErrAccessDenied is a 403 without a code: the bearer lacks a
	// permission (application_controller.rb's ActionPolicy::Unauthorized),
	// for example policy.read for an include of license.policy.
	ErrAccessDenied   = sentinel("keygen: access denied (missing permission)")
	ErrLicenseInvalid = sentinel("keygen: license key invalid")
	ErrTokenInvalid   = sentinel("keygen: token invalid")
	ErrForbidden      = sentinel("keygen: access denied")
)

// Sentinels for failures that are not API answers.
var (
	// ErrUnavailable: Keygen could not be reached or answered 5xx. The
	// concrete error is *[UnavailableError].
	ErrUnavailable = sentinel("keygen: service unavailable")
	// ErrRateLimited: Keygen answered 429 (or a blocklist 403). The concrete
	// error is *[RateLimitError]. It is not ErrUnavailable.
	ErrRateLimited = sentinel("keygen: rate limited")
	// ErrNotGenuine: the response signature or digest is missing or invalid.
	ErrNotGenuine = sentinel("keygen: response is not genuine")
	// ErrResponseTooOld: the signed Date is older than Config.MaxClockDrift.
	ErrResponseTooOld = subSentinel("keygen: response date too old (replay?)", ErrNotGenuine)
	// ErrNonceMismatch: a validation response did not echo our nonce.
	ErrNonceMismatch = subSentinel("keygen: validation nonce mismatch (replay?)", ErrNotGenuine)
	// ErrMalformedResponse: the body could not be decoded as Keygen JSON:API.
	ErrMalformedResponse = sentinel("keygen: malformed response")
)

// IsOffline reports whether err means the agent should keep running from its
// cache: Keygen was unreachable (ErrUnavailable) or its answer could not be
// trusted (ErrNotGenuine, e.g. a captive portal or a MITM). API answers,
// including rate limiting, are not offline.
func IsOffline(err error) bool {
	return errors.Is(err, ErrUnavailable) || errors.Is(err, ErrNotGenuine)
}

// ErrorSource is the JSON:API error source.
type ErrorSource struct {
	Pointer   string `json:"pointer,omitempty"`
	Parameter string `json:"parameter,omitempty"`
	Header    string `json:"header,omitempty"`
}

// Error is an API answer: a 4xx response, described by the first element of
// its JSON:API errors array.
type Error struct {
	Status    int
	Code      string
	Title     string
	Detail    string
	Source    ErrorSource
	RequestID string
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "keygen: %d", e.Status)
	if e.Code != "" {
		b.WriteString(" " + e.Code)
	}
	if e.Title != "" {
		b.WriteString(": " + e.Title)
	}
	if e.Detail != "" {
		b.WriteString(": " + e.Detail)
	}
	if p := e.Source.Pointer + e.Source.Parameter + e.Source.Header; p != "" {
		b.WriteString(" (" + p + ")")
	}
	return b.String()
}

// Is maps Keygen error codes (and statuses) onto the package sentinels.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.Code == "NOT_FOUND" || (e.Code == "" && e.Status == 404)
	case ErrProcessLimitExceeded:
		return e.Code == "MACHINE_PROCESS_LIMIT_EXCEEDED"
	case ErrPIDTaken:
		return e.Code == "PID_TAKEN"
	case ErrHeartbeatDead:
		return e.Code == "MACHINE_HEARTBEAT_DEAD" || e.Code == "PROCESS_HEARTBEAT_DEAD"
	case ErrFingerprintTaken:
		return e.Code == "FINGERPRINT_TAKEN"
	case ErrMachineLimitExceeded:
		return e.Code == "MACHINE_LIMIT_EXCEEDED"
	case ErrComponentsTaken:
		return e.Code == "COMPONENTS_FINGERPRINT_TAKEN" || e.Code == "COMPONENTS_FINGERPRINT_CONFLICT"
	case ErrLicenseSuspended:
		return e.Code == "LICENSE_SUSPENDED"
	case ErrLicenseExpired:
		return e.Code == "LICENSE_EXPIRED"
	case ErrLicenseNotAllowed:
		return e.Code == "LICENSE_NOT_ALLOWED"
	case ErrTokenNotAllowed:
		return e.Code == "TOKEN_NOT_ALLOWED"
	case ErrAuthNotAllowed:
		return e.Code == "LICENSE_NOT_ALLOWED" || e.Code == "TOKEN_NOT_ALLOWED"
	case ErrLoginRefused:
		switch e.Code {
		case "LICENSE_SUSPENDED", "LICENSE_BANNED", "LICENSE_EXPIRED", "USER_BANNED":
			return e.Status == 403
		}
	case ErrAccessDenied:
		return e.Status == 403 && e.Code == ""
	case ErrLicenseInvalid:
		return e.Code == "LICENSE_INVALID" || e.Code == "LICENSE_BANNED"
	case ErrTokenInvalid:
		switch e.Code {
		case "TOKEN_INVALID", "TOKEN_EXPIRED", "TOKEN_FORMAT_INVALID", "TOKEN_MISSING":
			return true
		}
	case ErrForbidden:
		return e.Status == 403
	}
	return false
}

// UnavailableError is a network failure, a timeout, a truncated body or a 5xx.
// It matches ErrUnavailable; Err (if any) is the underlying cause, so
// errors.Is(err, context.Canceled) also works: a caller that cancelled its
// own context should check that before treating Keygen as offline.
type UnavailableError struct {
	Status int // 0 when no response was received
	Err    error
}

func (e *UnavailableError) Error() string {
	switch {
	case e.Status != 0 && e.Err != nil:
		return fmt.Sprintf("keygen: unavailable (HTTP %d): %v", e.Status, e.Err)
	case e.Status != 0:
		return fmt.Sprintf("keygen: unavailable (HTTP %d)", e.Status)
	case e.Err != nil:
		return "keygen: unavailable: " + e.Err.Error()
	}
	return "keygen: unavailable"
}
func (e *UnavailableError) Unwrap() error        { return e.Err }
func (e *UnavailableError) Is(target error) bool { return target == ErrUnavailable }

// RateLimitError is a 429 (or a blocklist 403) from Keygen's rate limiter.
type RateLimitError struct {
	RateLimit
	Status int
}

func (e *RateLimitError) Error() string {
	return fmt.Sprintf("keygen: rate limited (window %q, %d/%d), retry after %s",
		e.Window, e.Count, e.Limit, e.RetryAfter.Round(time.Second))
}
func (e *RateLimitError) Is(target error) bool { return target == ErrRateLimited }
