package ipc

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"testing"
)

// FuzzFrames feeds arbitrary bytes through the frame reader and the
// request decoder: never a panic, every line is either a valid request or
// an error whose wire form is valid JSON-RPC.
func FuzzFrames(f *testing.F) {
	for _, s := range []string{
		`{"jsonrpc":"2.0","id":1,"method":"agent.hello","params":{"protocol":1}}` + "\n",
		`{"jsonrpc":"2.0","method":"lease.release","params":{"lease_id":"x"}}` + "\r\n",
		`[{"jsonrpc":"2.0","id":1,"method":"a"}]` + "\n",
		`{"jsonrpc":"1.0","id":"z","method":"a"}`,
		`{"jsonrpc":"2.0","id":{},"method":"a"}` + "\n\n\n",
		"not json\n{\n",
		`{"jsonrpc":"2.0","id":null,"method":"a","params":[1,2]}`,
		`{"jsonrpc":"2.0","id":1e400,"method":"a"}`,
		"\xff\xfe{}\n",
	} {
		f.Add([]byte(s), 64)
	}
	f.Fuzz(func(t *testing.T, data []byte, max int) {
		if max < 1 || max > 1<<16 {
			max = 1 << 10
		}
		fr := newFrameReader(bytes.NewReader(data), max)
		for range 1000 {
			line, err := fr.next()
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, errFrameTooLarge) {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if len(line) > max {
				t.Fatalf("line of %d bytes exceeds max %d", len(line), max)
			}
			req, id, _, perr := decodeRequest(line)
			if !json.Valid(id) {
				t.Fatalf("invalid id %q", id)
			}
			var resp wireResponse
			if perr != nil {
				resp = wireResponse{JSONRPC: "2.0", ID: id, Error: encodeError(perr)}
			} else {
				if req.Method == "" || req.JSONRPC != "2.0" {
					t.Fatalf("accepted %q as %+v", line, req)
				}
				resp = wireResponse{JSONRPC: "2.0", ID: id, Result: json.RawMessage(`null`)}
			}
			b, err := encodeLine(resp)
			if err != nil {
				t.Fatalf("encode response for %q: %v", line, err)
			}
			var back wireResponse
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatalf("response not JSON: %q", b)
			}
			if back.Error != nil {
				if e := decodeError(back.Error); e.Code != perr.Code {
					t.Fatalf("code %s round-tripped as %s", perr.Code, e.Code)
				}
			}
		}
	})
}
