package devserver

import (
	"net/http"
	"strings"
	"unicode"
)

// apiError is one Keygen error object, rendered in the {"errors":[...]}
// envelope (keygen-api app/controllers/application_controller.rb).
type apiError struct {
	Status int
	Title  string
	Detail string
	Code   string
	Source map[string]string // pointer, parameter or header
	Header http.Header       // extra response headers (WWW-Authenticate)
}

func (e *apiError) Error() string { return e.Code + ": " + e.Detail }

var statusTitles = map[int]string{
	400: "Bad request",
	401: "Unauthorized",
	402: "Payment required",
	403: "Access denied",
	404: "Not found",
	405: "Not supported",
	409: "Conflict",
	422: "Unprocessable resource",
	429: "Too many requests",
	500: "Internal server error",
	503: "Service unavailable",
}

func newError(status int, detail, code string) *apiError {
	return &apiError{Status: status, Title: statusTitles[status], Detail: detail, Code: code}
}

func (e *apiError) pointer(p string) *apiError {
	e.Source = map[string]string{"pointer": p}
	return e
}

func (e *apiError) parameter(p string) *apiError {
	e.Source = map[string]string{"parameter": p}
	return e
}

func (e *apiError) header(h string) *apiError {
	e.Source = map[string]string{"header": h}
	return e
}

func unprocessable(pointer, detail, code string) *apiError {
	return newError(422, detail, code).pointer(pointer)
}

// unprocessableEntity is the explicit 422 ("Unprocessable entity") used for
// heartbeat errors, as opposed to model validation errors.
func unprocessableEntity(detail, code string) *apiError {
	e := newError(422, detail, code)
	e.Title = "Unprocessable entity"
	return e
}

func badRequest(detail, code string) *apiError { return newError(400, detail, code) }

func notFound(what string) *apiError {
	return newError(404, "The requested "+what+" was not found", "NOT_FOUND")
}

func forbidden() *apiError {
	return newError(403, "You do not have permission to complete the request (ensure the token or license is allowed to access all resources)", "")
}

func unauthorized(scheme, detail, code string) *apiError {
	e := newError(401, detail, code)
	e.Header = http.Header{"Www-Authenticate": {scheme + ` realm="keygen"`}}
	return e
}

func (e *apiError) object() map[string]any {
	o := map[string]any{"title": e.Title, "detail": e.Detail}
	if e.Code != "" {
		o["code"] = e.Code
	}
	if e.Source != nil {
		o["source"] = e.Source
	}
	return o
}

// snake turns "maxProcesses" into "MAX_PROCESSES".
func snake(s string) string {
	var b strings.Builder
	for i, r := range s {
		if unicode.IsUpper(r) && i > 0 {
			b.WriteByte('_')
		}
		b.WriteRune(unicode.ToUpper(r))
	}
	return b.String()
}

// camelToWords turns "heartbeatCullStrategy" into "heartbeat cull strategy".
func camelToWords(s string) string {
	var b strings.Builder
	for _, r := range s {
		if unicode.IsUpper(r) {
			b.WriteByte(' ')
		}
		b.WriteRune(unicode.ToLower(r))
	}
	return b.String()
}
