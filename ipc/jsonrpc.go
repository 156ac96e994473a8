package ipc

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strconv"
)

// Framing: one JSON object per line, terminated by "\n" (a preceding "\r"
// is tolerated). Blank lines are ignored.

// errFrameTooLarge is returned by frameReader.next when a line exceeds the
// configured maximum.
var errFrameTooLarge = errors.New("message exceeds the maximum size")

// frameReader splits a stream into lines of at most max bytes (excluding the
// newline) without allocating max bytes up front.
type frameReader struct {
	r   *bufio.Reader
	max int
	buf []byte
	eof bool
}

func newFrameReader(r io.Reader, max int) *frameReader {
	size := 16 << 10
	if max+1 < size {
		size = max + 1
	}
	if size < 16 {
		size = 16
	}
	return &frameReader{r: bufio.NewReaderSize(r, size), max: max}
}

// next returns the next line without its terminator. The slice is valid
// until the next call. A last line without a newline is returned before
// io.EOF.
func (f *frameReader) next() ([]byte, error) {
	if f.eof {
		return nil, io.EOF
	}
	f.buf = f.buf[:0]
	for {
		chunk, err := f.r.ReadSlice('\n')
		n := len(f.buf) + len(chunk)
		if err == nil {
			n-- // the newline does not count
		}
		if n > f.max {
			return nil, errFrameTooLarge
		}
		f.buf = append(f.buf, chunk...)
		switch {
		case err == nil:
			line := f.buf[:len(f.buf)-1]
			if len(line) > 0 && line[len(line)-1] == '\r' {
				line = line[:len(line)-1]
			}
			return line, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(f.buf) > 0:
			f.eof = true
			return bytes.TrimRight(f.buf, "\r"), nil
		default:
			return nil, err
		}
	}
}

// wireRequest is a request or notification as sent on the wire.
type wireRequest struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id,omitempty"`
	Method  string          `json:"method"`
	Params  json.RawMessage `json:"params,omitempty"`
}

// wireError is the JSON-RPC error object.
type wireError struct {
	Code    int             `json:"code"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data,omitempty"`
}

// wireResponse is a response, or (client side, Method set) a notification.
type wireResponse struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id,omitempty"`
	Result  json.RawMessage `json:"result,omitempty"`
	Error   *wireError      `json:"error,omitempty"`
	Method  string          `json:"method,omitempty"`
	Params  json.RawMessage `json:"params,omitempty"`
}

var jsonNull = json.RawMessage("null")

// decodeRequest validates one line as a JSON-RPC 2.0 request. It returns
// the request, the id to answer with (null if none could be read) and, if
// the line is not a valid request, the error to answer with. notify is true
// for a well-formed request without an id (a notification: no answer).
func decodeRequest(line []byte) (req wireRequest, id json.RawMessage, notify bool, perr *Error) {
	id = jsonNull
	trimmed := bytes.TrimLeft(line, " \t\r\n")
	if !json.Valid(trimmed) {
		return req, id, false, &Error{Code: CodeParseError, Message: "parse error: the line is not valid JSON"}
	}
	switch trimmed[0] {
	case '[':
		return req, id, false, &Error{Code: CodeInvalidRequest, Message: "batch requests are not supported: send one request per line", RPCCode: rpcInvalidRequest}
	case '{':
	default:
		return req, id, false, &Error{Code: CodeInvalidRequest, Message: "invalid request: expected a JSON object", RPCCode: rpcInvalidRequest}
	}
	var raw struct {
		JSONRPC json.RawMessage `json:"jsonrpc"`
		ID      json.RawMessage `json:"id"`
		Method  json.RawMessage `json:"method"`
		Params  json.RawMessage `json:"params"`
	}
	if err := json.Unmarshal(trimmed, &raw); err != nil {
		return req, id, false, &Error{Code: CodeParseError, Message: "parse error: " + err.Error()}
	}
	if len(raw.ID) > 0 {
		switch raw.ID[0] {
		case '"', 'n', '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
			id = raw.ID
		default:
			return req, id, false, &Error{Code: CodeInvalidRequest, Message: "invalid request: id must be a string, a number or null", RPCCode: rpcInvalidRequest}
		}
	}
	invalid := func(msg string) (wireRequest, json.RawMessage, bool, *Error) {
		return req, id, false, &Error{Code: CodeInvalidRequest, Message: "invalid request: " + msg, RPCCode: rpcInvalidRequest}
	}
	var version string
	if len(raw.JSONRPC) == 0 || json.Unmarshal(raw.JSONRPC, &version) != nil || version != "2.0" {
		return invalid(`"jsonrpc" must be "2.0"`)
	}
	if len(raw.Method) == 0 || json.Unmarshal(raw.Method, &req.Method) != nil || req.Method == "" {
		return invalid(`"method" must be a non-empty string`)
	}
	if len(raw.Params) > 0 {
		switch raw.Params[0] {
		case '{', '[':
			req.Params = raw.Params
		case 'n':
		default:
			return invalid(`"params" must be an object or an array`)
		}
	}
	req.JSONRPC = version
	req.ID = raw.ID
	return req, id, len(raw.ID) == 0, nil
}

// encodeError builds the wire error for e: the numeric code, the message,
// and data = {"code": e.Code, ...fields of e.Data}.
func encodeError(e *Error) *wireError {
	data := map[string]json.RawMessage{}
	if e.Data != nil {
		if b, err := json.Marshal(e.Data); err == nil {
			if len(b) > 0 && b[0] == '{' {
				_ = json.Unmarshal(b, &data)
			} else if string(b) != "null" {
				data["detail"] = b
			}
		}
	}
	data["code"], _ = json.Marshal(e.Code)
	b, _ := json.Marshal(data)
	code := e.RPCCode
	if code == 0 {
		code = RPCCode(e.Code)
	}
	msg := e.Message
	if msg == "" {
		msg = e.Code
	}
	return &wireError{Code: code, Message: msg, Data: b}
}

// decodeError turns a wire error into an *Error (client side).
func decodeError(w *wireError) *Error {
	e := &Error{Message: w.Message, RPCCode: w.Code}
	if len(w.Data) > 0 && w.Data[0] == '{' {
		var m map[string]any
		if json.Unmarshal(w.Data, &m) == nil {
			if c, ok := m["code"].(string); ok {
				e.Code = c
				delete(m, "code")
			}
			if len(m) > 0 {
				e.Data = m
			}
		}
	} else if len(w.Data) > 0 && string(w.Data) != "null" {
		var v any
		if json.Unmarshal(w.Data, &v) == nil {
			e.Data = v
		}
	}
	if e.Code == "" {
		e.Code = codeForRPC(w.Code)
	}
	return e
}

func codeForRPC(n int) string {
	switch n {
	case rpcParseError:
		return CodeParseError
	case rpcInvalidRequest, rpcInvalidParams:
		return CodeInvalidRequest
	case rpcMethodNotFound:
		return CodeMethodNotFound
	case rpcInternal:
		return CodeInternal
	}
	for c, v := range rpcCodes {
		if v == n && c != CodeMessageTooLarge {
			return c
		}
	}
	return "RPC_" + strconv.Itoa(n)
}

// encodeLine marshals v as one line (with the trailing newline).
func encodeLine(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}
